#!/usr/bin/env bash
# Client policy at fleet scale (issue 15), on the release binary, in one command:
#
#   bench/policy-load.sh                 rules 10 1000 10000 100000, the issue's rule shape
#   RULES="10 100000" KIND=exact bench/policy-load.sh
#
# Per policy size: a POLICY_FILE of RULES rules, one per device, the matching rule last; then
#   1. `token-service policy check FILE`: wall time and peak RSS (/usr/bin/time);
#   2. the server (xlb flow on plain HTTP, RS256 local key, RATE_LIMIT_PER_CLIENT=0, logs to
#      /dev/null): time from exec to ready, REPS closed-loop runs of DURATION s with CONC
#      keep-alive clients (examples/loadgen) sending the load balancer's headers of the device
#      the last rule matches; tokens/s per run, peak RSS (VmHWM) after the runs;
#   3. with RELOAD=1 (default), a rewrite of the file while a run is under way: tokens/s of that
#      run and of failed requests (the old policy serves until the new one is compiled).
# Rule shapes (KIND): glob (default, as the issue measured): spiffe_id =
# "spiffe://tdN.example.org/ns/*/sa/*"; exact: spiffe_id = "spiffe://fleet.example.org/device/N".
#
# env (defaults in brackets): RULES ["10 1000 10000 100000"] KIND [glob] DURATION [10] REPS [3]
#   CONC [16] RELOAD [1] RELOAD_SECONDS [10] NICE [-19] SCRATCH [/tmp/ts-policy-bench] OUT [bench/results/policy-<UTC stamp>]
# Every process it starts is stopped by its PID. Results: $OUT/results.tsv, $OUT/summary.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
cd "$ROOT"

# As bench/load.sh: with sched_autogroup a nice value counts only inside its session, so run in
# a session of our own and give its autogroup NICE [-19] (our processes only; 0 disables).
if [ -z "${BENCH_INNER:-}" ] && [ "${NICE:--19}" != 0 ] && [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo 0)" = 1 ]; then
  BENCH_INNER=1 setsid "$0" "$@" &
  inner=$!
  trap 'kill -TERM "$inner" 2>/dev/null || true' INT TERM
  rc=0; wait "$inner" || rc=$?
  exit $rc
fi
if [ -n "${BENCH_INNER:-}" ]; then
  echo "${NICE:--19}" > "/proc/$$/autogroup" 2>/dev/null || echo "note: could not set autogroup nice"
fi

RULES=${RULES:-"10 1000 10000 100000"}; KIND=${KIND:-glob}
DURATION=${DURATION:-10}; REPS=${REPS:-3}; CONC=${CONC:-16}; RELOAD=${RELOAD:-1}; RELOAD_SECONDS=${RELOAD_SECONDS:-10}
SCRATCH=${SCRATCH:-/tmp/ts-policy-bench}
OUT=${OUT:-$ROOT/bench/results/policy-$(date -u +%Y%m%dT%H%M%SZ)}

cargo build --release -q -p token-service --bin token-service --example loadgen
TS=$ROOT/target/release/token-service
LOADGEN=$ROOT/target/release/examples/loadgen

mkdir -p "$OUT" "$SCRATCH"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d -p "$SCRATCH" run.XXXXXX)
SERVERS=()
cleanup() {
  local p
  for p in "${SERVERS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/rs256.pem" 2>/dev/null
chmod 600 "$WORK/rs256.pem"

# The device id the rule at position I (0-based) matches, and the rule itself.
device() { if [ "$KIND" = exact ]; then echo "spiffe://fleet.example.org/device/$1"; else echo "spiffe://td$1.example.org/ns/bench/sa/loadgen"; fi; }
policy() { # RULES FILE [DECISION_OF_LAST]
  awk -v n="$1" -v kind="$KIND" -v last="${3:-allow}" 'BEGIN {
    for (i = 0; i < n; i++) {
      id = (kind == "exact") ? "spiffe://fleet.example.org/device/" i : "spiffe://td" i ".example.org/ns/*/sa/*"
      printf "[[rule]]\nname = \"device-%d\"\ndecision = \"%s\"\n[rule.match]\nspiffe_id = \"%s\"\n\n", i, (i == n - 1) ? last : "allow", id
    }
  }' > "$2"
}

{
  echo "date_utc: $(date -u +%FT%TZ)"
  echo "host: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r)"
  echo "rustc: $(rustc --version)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo ' (dirty)')"
  echo "scheduling: autogroup $(cat /proc/$$/autogroup 2>/dev/null || echo n/a)"
  echo "RULES='$RULES' KIND=$KIND DURATION=$DURATION REPS=$REPS CONC=$CONC RELOAD=$RELOAD"
} | tee "$OUT/env.txt"

hwm_kb() { awk '/^VmHWM:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
now_ms() { date +%s%3N; }
run_load() { # SPIFFE SECONDS JSON
  local fp serial
  fp=$(printf '%s' "$1" | openssl dgst -sha256 -binary | base64 | tr -d '=')
  /usr/bin/time -f '%U %S' -o "$3.time" "$LOADGEN" --url "http://127.0.0.1:$PORT/token" -c "$CONC" -z "$2" --body grant_type=client_credentials \
    -H "X-Client-Cert-Present: true" -H "X-Client-Cert-Chain-Verified: true" -H "X-Client-Cert-Error: " \
    -H "X-Client-Cert-Spiffe: $1" -H "X-Client-Cert-Hash: $fp" -H "X-Client-Cert-Serial-Number: 01:02" \
    -H "X-Client-Cert-DNSName-SANs: " -H "X-Client-Cert-URI-SANs: " \
    -H "X-Client-Cert-Valid-Not-Before: 2026-01-01T00:00:00Z" -H "X-Client-Cert-Valid-Not-After: 2036-01-01T00:00:00Z" \
    --json "$3" > /dev/null
}
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d[sys.argv[2]])" "$1" "$2"; }

proc_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0; }
sys_busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }

# 1. per size: the policy, `policy check`, a server of its own (all stay up, so that the runs
#    of the sizes alternate and foreign load spreads over all of them).
TSV=$OUT/results.tsv
printf 'rules\tkind\tcheck_s\tcheck_cpu_s\tcheck_peak_kib\tready_s\trep\ttokens_per_s\tp99_ms\tnon2xx\tserver_cores\tforeign_cores\tserver_peak_kib\n' > "$TSV"
declare -A PID_OF PORT_OF CHECK READY
port=18181
for n in $RULES; do
  file=$WORK/policy-$n.toml
  policy "$n" "$file"
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/check.time" "$TS" policy check "$file" > "$WORK/check-$n.out"
  read -r check_s check_user check_sys check_kib < "$WORK/check.time"
  CHECK[$n]="$check_s $(awk -v u="$check_user" -v s="$check_sys" 'BEGIN {printf "%.2f", u + s}') $check_kib"
  t0=$(now_ms)
  env -i PATH="$PATH" PORT=$port BIND_ADDRESS=127.0.0.1 DATA_DIR="$WORK/data" TOKEN_ISSUER=https://token-service.bench \
    TOKEN_AUDIENCE=bench-audience RATE_LIMIT_PER_CLIENT=0 LOG_FORMAT=json LOG_LEVEL=info \
    AUTH_FLOWS=xlb-mtls-client-credentials SIGNING_KEY_FILE="$WORK/rs256.pem" POLICY_FILE="$file" \
    POLICY_RELOAD_INTERVAL=1 "$TS" serve > /dev/null 2> "$OUT/server-$n.err" &
  PID_OF[$n]=$!; PORT_OF[$n]=$port; SERVERS+=("$!")
  for _ in $(seq 1 1200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/readyz" || true)" = 200 ] && break
    sleep 0.05
  done
  READY[$n]=$(awk -v a="$t0" -v b="$(now_ms)" 'BEGIN {printf "%.2f", (b - a) / 1000}')
  echo "  $n rules: policy check ${CHECK[$n]% *} (wall s, cpu s), peak ${check_kib} KiB; server ready in ${READY[$n]} s"
  PORT=$port; run_load "$(device $((n - 1)))" 2 "$WORK/warm.json"
  port=$((port + 1))
done

# 2. REPS rounds, each size once per round.
for rep in $(seq 1 "$REPS"); do
  for n in $RULES; do
    PORT=${PORT_OF[$n]}; pid=${PID_OF[$n]}; f=$OUT/load-$n-r$rep.json
    s0=$(proc_ticks "$pid"); b0=$(sys_busy_ticks)
    run_load "$(device $((n - 1)))" "$DURATION" "$f"
    s1=$(proc_ticks "$pid"); b1=$(sys_busy_ticks)
    rps=$(field "$f" rps); p99=$(field "$f" p99_ms)
    bad=$(( $(field "$f" non2xx) + $(field "$f" errors) ))
    # Cores: the server's, and foreign (busy CPU beyond the server and the load generator).
    read -r gu gs < "$f.time"
    cores=$(awk -v a="$s0" -v b="$s1" -v d="$DURATION" 'BEGIN {printf "%.2f", (b - a) / 100 / d}')
    other=$(awk -v a="$b0" -v b="$b1" -v s0="$s0" -v s1="$s1" -v u="$gu" -v s="$gs" -v d="$DURATION" \
      'BEGIN {f = ((b - a) - (s1 - s0)) / 100 / d - (u + s) / d; printf "%.2f", f < 0 ? 0 : f}')
    peak=$(hwm_kb "$pid")
    read -r check_s check_cpu check_kib <<< "${CHECK[$n]}"
    echo "  round $rep, $n rules: $rps tokens/s p99 $p99 ms non-2xx $bad | server $cores cores, foreign $other cores | server peak ${peak} KiB"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$KIND" "$check_s" "$check_cpu" "$check_kib" "${READY[$n]}" "$rep" "$rps" "$p99" "$bad" "$cores" "$other" "$peak" >> "$TSV"
  done
done

# 3. a reload under load per size: the new version denies the device once it is in force.
if [ "$RELOAD" = 1 ]; then
  for n in $RULES; do
    PORT=${PORT_OF[$n]}; file=$WORK/policy-$n.toml
    ( sleep 2; policy "$n" "$file.new" deny; mv "$file.new" "$file" ) &
    writer=$!
    run_load "$(device $((n - 1)))" "$RELOAD_SECONDS" "$OUT/reload-$n.json"
    wait "$writer"
    line="$(field "$OUT/reload-$n.json" ok) issued, $(field "$OUT/reload-$n.json" non2xx) refused, $(field "$OUT/reload-$n.json" errors) errors, p99 $(field "$OUT/reload-$n.json" p99_ms) ms, max $(field "$OUT/reload-$n.json" max_ms) ms"
    echo "  $n rules, reload under load: $line"
    printf '%s\t%s\t%s\n' "$n" "$KIND" "$line" >> "$OUT/reload.tsv"
  done
fi

python3 - "$TSV" > "$OUT/summary.md" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter='\t'))
print('| rules in POLICY_FILE | `policy check` (wall / CPU) | its peak memory | server ready | tokens/s (median of runs; min-max) | p99 ms | server peak memory | foreign cores (max) |')
print('|---:|---:|---:|---:|---:|---:|---:|---:|')
for n in dict.fromkeys(r['rules'] for r in rows):
    rs = [r for r in rows if r['rules'] == n]
    all_rps = [float(r['tokens_per_s']) for r in rs]
    rps = statistics.median(all_rps)
    p99 = statistics.median(float(r['p99_ms']) for r in rs)
    r = rs[-1]
    print(f"| {int(n):,} | {float(r['check_s']):.2f} s / {float(r['check_cpu_s']):.2f} s | {int(r['check_peak_kib']) / 1024:.0f} MiB | {float(r['ready_s']):.2f} s | {rps:,.0f} ({min(all_rps):,.0f}-{max(all_rps):,.0f}) | {p99:.2f} | {int(r['server_peak_kib']) / 1024:.0f} MiB | {max(float(x['foreign_cores']) for x in rs):.2f} |")
EOF
cat "$OUT/summary.md"
echo "results: $OUT"
