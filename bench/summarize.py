#!/usr/bin/env python3
"""Medians of a bench/load.sh run (results.tsv, ceilings.tsv, cold_start.tsv) as markdown.

usage: summarize.py OUT_DIR
Ratios ours/peer are medians of the per-repetition ratios (ours and the peer ran back to back
in each repetition), so drift of the machine between repetitions cancels out.
"""
import csv
import json
import os
import statistics
import sys
from collections import defaultdict

out = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(out, 'results.tsv')), delimiter='\t'))
by = defaultdict(list)
for r in rows:
    by[(r['case'], r['impl'], r['load'])].append(r)
cases = list(dict.fromkeys(r['case'] for r in rows))


def med(rs, k):
    return statistics.median(float(r[k]) for r in rs) if rs else float('nan')


def rng(rs, k):
    v = [float(r[k]) for r in rs]
    return f"{min(v):.0f}–{max(v):.0f}" if v else ''


ceil = {}
ceil_path = os.path.join(out, 'ceilings.tsv')
if os.path.exists(ceil_path):
    for line in open(ceil_path):
        f = line.rstrip('\n').split('\t')
        if len(f) >= 3 and not line.startswith('#') and f[0] != 'what':
            ceil[(f[0], int(f[1]))] = (float(f[2]), f[5] if len(f) > 5 else '')

print('## Load (medians; tokens/s = 2xx responses per second)\n')
print('| case | impl | runs | tokens/s (min–max) | p50 ms | p99 ms | failed | server cores | generator cores | '
      'foreign cores (max) | server run-queue wait (cores) | peak RSS MiB | ours/peer (median of per-run ratios) |')
print('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
for case in cases:
    for impl in ('ours', 'peer', 'emulator'):
        rs = by.get((case, impl, 'peak'), [])
        if not rs:
            continue
        ratio = ''
        if impl == 'peer':
            ours = {r['rep']: float(r['rps']) for r in by.get((case, 'ours', 'peak'), [])}
            ratios = [ours[r['rep']] / float(r['rps']) for r in rs if r['rep'] in ours and float(r['rps']) > 0]
            if ratios:
                ratio = f"**{statistics.median(ratios):.2f}×** ({min(ratios):.2f}–{max(ratios):.2f})"
        print(f"| {case} | {impl} | {len(rs)} | {med(rs, 'rps'):.0f} ({rng(rs, 'rps')}) | {med(rs, 'p50_ms'):.2f} | "
              f"{med(rs, 'p99_ms'):.2f} | {sum(int(r['bad']) for r in rs)} | {med(rs, 'server_cores'):.2f} | "
              f"{med(rs, 'gen_cores'):.2f} | {max(float(r['foreign_cores']) for r in rs):.2f} | {med(rs, 'server_runq_cores'):.2f} | "
              f"{max(int(r['peak_rss_kb']) for r in rs) / 1024:.1f} | {ratio} |")

print('\n## Half of the peak rate (open loop, latency from the scheduled send time)\n')
print('"rt" = server and generator at real-time priority (chrt -r 1), so that other sessions\' '
      'processes cannot delay them.\n')
print('| case | impl | scheduling | runs | offered rate/s | achieved tokens/s | p50 ms | p99 ms | failed | foreign cores (max) | server run-queue wait (cores) |')
print('|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|')
for case in cases:
    for impl in ('ours', 'peer', 'emulator'):
      for load in ('half', 'half-rt'):
        rs = by.get((case, impl, load), [])
        peak = by.get((case, 'ours' if impl == 'emulator' else impl, 'peak'), [])
        if not rs:
            continue
        sched = 'rt' if load == 'half-rt' else 'normal'
        print(f"| {case} | {impl} | {sched} | {len(rs)} | {med(peak, 'rps') / 2:.0f} | {med(rs, 'rps'):.0f} | "
              f"{med(rs, 'p50_ms'):.2f} | {med(rs, 'p99_ms'):.2f} | {sum(int(r['bad']) for r in rs)} | "
              f"{max(float(r['foreign_cores']) for r in rs):.2f} | {med(rs, 'server_runq_cores'):.2f} |")

if any(c == 'iam' for c in cases):
    print('\n## SIGNER=iam against the emulator: what Token Service adds\n')
    for load in ('peak', 'half', 'half-rt'):
        o, e = by.get(('iam', 'ours', load), []), by.get(('iam', 'emulator', load), [])
        if o and e:
            print(f"- {load}: Token Service p50 {med(o, 'p50_ms'):.2f} ms vs emulator signJwt alone "
                  f"{med(e, 'p50_ms'):.2f} ms → **{med(o, 'p50_ms') - med(e, 'p50_ms'):+.2f} ms** added at the median "
                  f"(tokens/s {med(o, 'rps'):.0f} vs {med(e, 'rps'):.0f}; p99 {med(o, 'p99_ms'):.2f} vs {med(e, 'p99_ms'):.2f} ms)")
    im = os.path.join(out, 'iam_metrics.tsv')
    if os.path.exists(im):
        ms = defaultdict(list)
        for line in open(im):
            f = line.split()
            if len(f) == 5:
                ms[f[0]].append((float(f[2]), float(f[3]), float(f[4])))
        for load, v in ms.items():
            print(f"- {load}, Token Service's own metrics (mean over each run, median of runs): /token answered in "
                  f"{statistics.median(x[0] for x in v):.2f} ms, of which the signJwt call {statistics.median(x[1] for x in v):.2f} ms "
                  f"→ **{statistics.median(x[2] for x in v):.2f} ms** inside Token Service")

if ceil:
    print('\n## Ceilings (sign_ceiling, median) and ratios\n')
    print('| ceiling | 1 thread /s | 2 threads /s | note |')
    print('|---|---:|---:|---|')
    for what in ('rs256_sign', 'es256_sign', 'mtls13_full_handshake'):
        one, two = ceil.get((what, 1)), ceil.get((what, 2))
        if one and two:
            print(f"| {what} | {one[0]:.0f} | {two[0]:.0f} | {two[1] or one[1]} |")
    pairs = [('xlb-RS256', 'rs256_sign'), ('mtls-RS256', 'rs256_sign'), ('xlb-ES256', 'es256_sign'),
             ('mtls-ES256', 'es256_sign'), ('new-ES256', 'mtls13_full_handshake'),
             ('new-RS256', 'mtls13_full_handshake')]
    print()
    for case, what in pairs:
        rs = by.get((case, 'ours', 'peak'), [])
        if rs and (what, 2) in ceil:
            print(f"- {case}: {med(rs, 'rps'):.0f} tokens/s = **{100 * med(rs, 'rps') / ceil[(what, 2)][0]:.0f}%** "
                  f"of the 2-thread {what} ceiling ({ceil[(what, 2)][0]:.0f}/s)")

cold = os.path.join(out, 'cold_start.tsv')
if os.path.exists(cold):
    print('\n## Cold start (exec → first 200 from discovery) and idle RSS\n')
    print('| variant | runs | median ms | min ms | p90 ms | exec → first token ms (median) | idle RSS MiB (median) |')
    print('|---|---:|---:|---:|---:|---:|---:|')
    for line in open(cold):
        if '\t' not in line:
            continue
        variant, js = line.split('\t', 1)
        d = json.loads(js)
        print(f"| {variant} | {d['runs']} | {d['cold_start_ms_median']:.2f} | {d['cold_start_ms_min']:.2f} | "
              f"{d['cold_start_ms_p90']:.2f} | {d['first_token_ms_median'] or float('nan'):.2f} | {d['idle_rss_mib_median']:.1f} |")
