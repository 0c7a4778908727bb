#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each for SECONDS (default 600), one after another,
# at the lowest CPU priority in a single process (no -jobs/-workers), then prints the executions per target.
#
#   fuzz/run.sh [SECONDS]
#   TARGETS="x509_chain spiffe_id" fuzz/run.sh 600   # only those targets
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Each target's corpus
# grows in fuzz/corpus/<target>/ (started from the committed seeds in fuzz/seeds/<target>/);
# crashes land in fuzz/artifacts/<target>/, full logs in fuzz/logs/<target>.log.
set -euo pipefail

seconds="${1:-600}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."

all=(form xlb_san xlb_flow forwarded_cert x509_facts x509_chain policy_rules policy_template deny_list spiffe_id cert_twin)
# TARGETS="a b" runs only those (e.g. two lanes at once, one per core).
read -r -a targets <<< "${TARGETS:-${all[*]}}"

echo "building ${#targets[@]} targets (nightly, AddressSanitizer, debug assertions)"
CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" nice -n 19 cargo +nightly fuzz build

mkdir -p "$here/logs"
declare -A runs result
failed=0
for target in "${targets[@]}"; do
    mkdir -p "$here/corpus/$target" "$here/artifacts/$target"
    log="$here/logs/$target.log"
    echo "== $target: ${seconds}s ($(date -u +%FT%TZ))"
    set +e
    nice -n 19 cargo +nightly fuzz run "$target" \
        "$here/corpus/$target" "$here/seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1
    status=$?
    set -e
    # libFuzzer's final stats: "stat::number_of_executed_units: N"; its last status line as a
    # fallback: "#N DONE ..." (or the line before a crash).
    runs[$target]="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    if [ -z "${runs[$target]}" ]; then
        runs[$target]="$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')"
    fi
    if [ "$status" -eq 0 ]; then
        result[$target]="ok"
    else
        result[$target]="FAILED (exit $status; see $log and fuzz/artifacts/$target/)"
        failed=1
    fi
    echo "   $target: ${runs[$target]:-?} executions, ${result[$target]}"
done

echo
echo "target            executions  seconds  result"
for target in "${targets[@]}"; do
    printf '%-17s %10s  %7s  %s\n' "$target" "${runs[$target]:-?}" "$seconds" "${result[$target]}"
done
exit "$failed"
