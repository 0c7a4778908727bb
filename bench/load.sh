#!/usr/bin/env bash
# Load benchmark of Token Service's POST /token, back to back with the oidc-provider peer
# (../shared/peers/oidc-provider), in one command:
#
#   bench/load.sh            full run (about 30 min on 2 cores)
#   bench/load.sh --quick    smoke run (about 3 min: 1 rep of 3 s, ES256 only)
#
# What it does (loopback only; every process it starts is stopped by its PID):
#   1. builds the release binaries (token-service, gcp-emulator, examples loadgen, cold_start,
#      sign_ceiling); installs oha 1.16.0 if missing; copies the peer to $SCRATCH/peer, npm ci;
#   2. ceilings: aws-lc-rs signatures/s and in-memory TLS 1.3 mTLS handshakes/s (sign_ceiling);
#   3. per case, Token Service and the peer both listening, REPS alternating runs of DURATION s
#      each (ours, peer, ours, peer, ...), then REPS runs at half of each one's median peak rate
#      (open loop, latency measured from the scheduled send time), once with normal scheduling
#      and once at real-time priority (HALF_RT):
#        xlb-ES256, xlb-RS256    load-balancer header flow, plain HTTP, keep-alive (oha);
#                                peer: header mode (certificate in X-SSL-Client-Cert)
#        mtls-ES256, mtls-RS256  direct mTLS, keep-alive (oha --cert); peer: MODE=mtls
#        new-ES256, new-RS256    direct mTLS, new TCP connection + full TLS handshake per request,
#                                no session resumption (examples/loadgen --new-conn)
#        iam                     SIGNER=iam against gcp-emulator with IAM_LATENCY_MS on signJwt,
#                                IAM_CONC concurrent requests (no peer); compared with the same
#                                load sent to the emulator's signJwt directly
#   4. cold start (exec -> first 200 from discovery) and idle RSS, COLD_RUNS times;
#   5. results: $OUT/results.tsv (every run), $OUT/summary.md (medians, ratios), raw outputs.
#
# Token Service runs with RATE_LIMIT_PER_CLIENT=0 (its per-client limit would cap a single
# load-generating client at 10/s), every other limit at its default, logs (JSON, info) to
# /dev/null. Placement is "shared": server and generator float on both cores.
#
# env (defaults in brackets):
#   DURATION [10]  REPS [3]  WARMUP [2]  CONC [32] (keep-alive and new-connection cases)
#   CASES ["xlb-ES256 xlb-RS256 mtls-ES256 mtls-RS256 new-ES256 new-RS256 iam"]
#   PEER [1]            0 skips the peer
#   PEER_WORKERS [2]    Node cluster workers of the peer (2 = it may use both cores, as we do)
#   PEER_CACHE [1]      peer header mode caches parsed certificates (its faster variant)
#   HALF [1]            0 skips the half-peak runs
#   HALF_RT [1]         also repeat the half-peak runs with server and generator at real-time
#                       priority (chrt -r 1; "half-rt"): latency without other sessions'
#                       processes on the CPU (they keep the idle half of the machine)
#   IAM_CONC [1000]  IAM_LATENCY_MS [20]
#   COLD_RUNS [30]      CEILING [1] (0 skips the ceilings)
#   NICE [-19]          our session's autogroup niceness (shields against other sessions'
#                       builds on a shared machine; 0 disables)
#   SCRATCH [/tmp/ts-bench]  OUT [bench/results/<UTC timestamp>]
#   BASE_TS             path of another token-service binary (e.g. an earlier commit's release
#                       build): it takes the peer's place, with the same settings and load as
#                       ours, so the "peer" rows and ratios are a same-run A/B of two versions
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
cd "$ROOT"

# With sched_autogroup a nice value counts only inside its session: run in a session of our
# own and give that session's autogroup the NICE value (our processes only).
if [ -z "${BENCH_INNER:-}" ] && [ "${NICE:--19}" != 0 ] && [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo 0)" = 1 ]; then
  BENCH_INNER=1 setsid "$0" "$@" &
  inner=$!
  trap 'kill -TERM "$inner" 2>/dev/null || true' INT TERM
  rc=0; wait "$inner" || rc=$?
  while kill -0 "$inner" 2>/dev/null; do wait "$inner" || rc=$?; done
  exit $rc
fi
if [ -n "${BENCH_INNER:-}" ]; then
  echo "${NICE:--19}" > "/proc/$$/autogroup" 2>/dev/null || echo "note: could not set autogroup nice"
fi

if [ "${1:-}" = --quick ]; then
  : "${DURATION:=3}" "${REPS:=1}" "${WARMUP:=1}" "${CASES:=xlb-ES256 mtls-ES256 new-ES256 iam}"
  : "${COLD_RUNS:=5}" "${IAM_CONC:=200}"
fi
DURATION=${DURATION:-10}; REPS=${REPS:-3}; WARMUP=${WARMUP:-2}; CONC=${CONC:-32}
CASES=${CASES:-"xlb-ES256 xlb-RS256 mtls-ES256 mtls-RS256 new-ES256 new-RS256 iam"}
PEER=${PEER:-1}; PEER_WORKERS=${PEER_WORKERS:-2}; PEER_CACHE=${PEER_CACHE:-1}; HALF=${HALF:-1}
HALF_RT=${HALF_RT:-1}
IAM_CONC=${IAM_CONC:-1000}; IAM_LATENCY_MS=${IAM_LATENCY_MS:-20}
COLD_RUNS=${COLD_RUNS:-30}; CEILING=${CEILING:-1}
SCRATCH=${SCRATCH:-/tmp/ts-bench}
OUT=${OUT:-$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
PEER_SRC=${PEER_SRC:-$ROOT/../shared/peers/oidc-provider}
ulimit -n 20000 2>/dev/null || true

# ---- build and tools ---------------------------------------------------------------------
cargo build --release -q -p token-service -p gcp-emulator --bins \
  --example loadgen --example cold_start --example sign_ceiling
BIN=$ROOT/target/release
TS=$BIN/token-service
LOADGEN=$BIN/examples/loadgen
command -v oha >/dev/null || { echo "installing oha 1.16.0 (cargo, several minutes)"; cargo install oha --version 1.16.0 --locked; }

mkdir -p "$OUT" "$OUT/raw" "$SCRATCH"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d -p "$SCRATCH" run.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() { # the process and its direct children (Node cluster workers), by PID
  local p=$1 kids
  kids=$(pgrep -P "$p" 2>/dev/null || true)
  kill "$p" 2>/dev/null || true
  for k in $kids; do kill "$k" 2>/dev/null || true; done
  wait "$p" 2>/dev/null || true
}

# ---- PKI and keys -------------------------------------------------------------------------
TSDIR=$WORK/ts
mkdir -p "$TSDIR"
SPIFFE=spiffe://token-service.local/ns/bench/sa/loadgen
DATA_DIR=$TSDIR "$TS" pki client --name bench --spiffe-id "$SPIFFE" --dns bench.token-service.local >/dev/null
PKI=$TSDIR/pki
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TSDIR/es256.pem" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TSDIR/rs256.pem" 2>/dev/null
chmod 600 "$TSDIR"/*.pem
BODY='grant_type=client_credentials'
# What Google's load balancer sends for the bench client.
FP=$(openssl x509 -in "$PKI/bench.pem" -outform DER | openssl dgst -sha256 -binary | base64 | tr -d '=')
SERIAL=$(openssl x509 -in "$PKI/bench.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f' | sed 's/../&:/g; s/:$//')
XLB_HEADERS=(
  -H "X-Client-Cert-Present: true" -H "X-Client-Cert-Chain-Verified: true" -H "X-Client-Cert-Error: "
  -H "X-Client-Cert-Spiffe: $SPIFFE" -H "X-Client-Cert-Hash: $FP" -H "X-Client-Cert-Serial-Number: $SERIAL"
  -H "X-Client-Cert-DNSName-SANs: $(printf bench.token-service.local | base64)" -H "X-Client-Cert-URI-SANs: "
  -H "X-Client-Cert-Valid-Not-Before: 2026-01-01T00:00:00Z" -H "X-Client-Cert-Valid-Not-After: 2036-01-01T00:00:00Z"
)

# ---- the peer -----------------------------------------------------------------------------
if [ -n "${BASE_TS:-}" ]; then
  PEER=1; PEER_BODY=$BODY
elif [ "$PEER" = 1 ]; then
  mkdir -p "$SCRATCH/peer"
  (cd "$PEER_SRC" && tar --exclude=node_modules --exclude=results -cf - .) | (cd "$SCRATCH/peer" && tar -xf -)
  if [ ! -d "$SCRATCH/peer/node_modules/oidc-provider" ] || [ "$SCRATCH/peer/package-lock.json" -nt "$SCRATCH/peer/node_modules/.package-lock.json" ]; then
    (cd "$SCRATCH/peer" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  PPKI=$WORK/peer-pki
  "$SCRATCH/peer/gen-certs.sh" "$PPKI"
  PEER_BODY='grant_type=client_credentials&client_id=bench-client-dn'
fi

# ---- environment record -------------------------------------------------------------------
{
  echo "date_utc: $(date -u +%FT%TZ)"
  echo "host: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r)"
  echo "rustc: $(rustc --version)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo ' (dirty)')"
  echo "oha: $(oha --version)"
  [ -n "${BASE_TS:-}" ] && echo "peer: BASE_TS=$BASE_TS (an earlier token-service build, same settings)"
  [ "$PEER" = 1 ] && [ -z "${BASE_TS:-}" ] && echo "peer: oidc-provider $(node -p "require('$SCRATCH/peer/node_modules/oidc-provider/package.json').version"), node $(node --version), workers $PEER_WORKERS, header cache $PEER_CACHE"
  echo "scheduling: autogroup $(cat /proc/$$/autogroup 2>/dev/null || echo n/a); placement shared (no pinning)"
  echo "DURATION=$DURATION REPS=$REPS WARMUP=$WARMUP CONC=$CONC IAM_CONC=$IAM_CONC IAM_LATENCY_MS=$IAM_LATENCY_MS"
  echo "CASES='$CASES'"
} | tee "$OUT/env.txt"

# ---- CPU accounting (clock ticks, 100 Hz) -------------------------------------------------
tree_pids() { local p; for p in "$@"; do echo "$p"; pgrep -P "$p" 2>/dev/null || true; done; }
proc_ticks() {
  local p t=0 v
  for p in "$@"; do
    v=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null) || continue
    t=$((t + ${v:-0}))
  done
  echo $t
}
sys_busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
ref_speed() { taskset -c 0 openssl speed -seconds 1 -mr ecdsap256 2>/dev/null | awk -F: '/^\+F4:/{printf "%.0f", $4}'; }
runq_ns() { # nanoseconds the threads of the given pids waited for a CPU (schedstat field 2)
  local p
  for p in "$@"; do cat /proc/"$p"/task/*/schedstat 2>/dev/null || true; done | awk '{s += $2} END {printf "%.0f", s}'
}
metric_sums() { # URL -> "token_sum token_count signjwt_sum signjwt_count"
  curl -sf "$1" | awk '
    /^token_service_token_request_duration_seconds_sum/ {ts += $2}
    /^token_service_token_request_duration_seconds_count/ {tc += $2}
    index($0, "upstream_request_duration_seconds_sum{api=\"IAM Credentials signJwt\"}") {ss += $NF}
    index($0, "upstream_request_duration_seconds_count{api=\"IAM Credentials signJwt\"}") {sc += $NF}
    END {printf "%.6f %.0f %.6f %.0f", ts, tc, ss, sc}'
}
hwm_kb() { awk '/^VmHWM:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---- servers ------------------------------------------------------------------------------
wait_http() { # url [curl args...]: until it answers 200 (10 s at most)
  local url=$1; shift
  for _ in $(seq 1 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" || true)" = 200 ] && return 0
    sleep 0.05
  done
  echo "no answer from $url" >&2; return 1
}

EMU_PID=
start_emulator() {
  EPORT=19090
  "$BIN/gcp-emulator" --port $EPORT > "$OUT/emulator.log" 2>&1 &
  EMU_PID=$!; PIDS+=("$EMU_PID")
  wait_http "http://127.0.0.1:$EPORT/emulator/calls"
  curl -sf -X POST "http://127.0.0.1:$EPORT/emulator/faults" -H 'Content-Type: application/json' \
    -d "{\"endpoint\":\"iam.signJwt\",\"latency_ms\":$IAM_LATENCY_MS}" > /dev/null
}

# start_ours KIND ALG [BINARY PORT_OFFSET] -> OURS_PID, OURS_URL, OURS_TLS
start_ours() {
  local kind=$1 alg=$2 bin=${3:-$TS} off=${4:-0} port=18081 env=()
  port=$((port + off))
  env=(PORT=$port BIND_ADDRESS=127.0.0.1 DATA_DIR="$TSDIR" TOKEN_ISSUER=https://token-service.bench
       TOKEN_AUDIENCE=bench-audience RATE_LIMIT_PER_CLIENT=0 LOG_FORMAT=json LOG_LEVEL=info)
  case $kind in
    xlb)
      env+=(AUTH_FLOWS=xlb-mtls-client-credentials SIGNING_KEY_FILE="$TSDIR/${alg,,}.pem")
      OURS_URL=http://127.0.0.1:$port/token; OURS_TLS=() ;;
    mtls|new)
      port=$((18444 + off))
      env+=(PORT=$port AUTH_FLOWS=mtls-client-credentials SIGNING_KEY_FILE="$TSDIR/${alg,,}.pem"
            TLS_CERT_FILE="$PKI/server.pem" TLS_KEY_FILE="$PKI/server.key" TLS_CLIENT_CA_FILE="$PKI/ca.pem")
      OURS_URL=https://127.0.0.1:$port/token
      OURS_TLS=(--cacert "$PKI/ca.pem" --cert "$PKI/bench.pem" --key "$PKI/bench.key") ;;
    iam)
      env+=(AUTH_FLOWS=xlb-mtls-client-credentials SIGNER=iam GCE_METADATA_HOST=127.0.0.1:$EPORT
            IAM_CREDENTIALS_ENDPOINT=http://127.0.0.1:$EPORT
            JWKS_URI=http://127.0.0.1:$EPORT/service_accounts/v1/metadata/jwk/token-service@demo-project.iam.gserviceaccount.com)
      OURS_URL=http://127.0.0.1:$port/token; OURS_TLS=() ;;
  esac
  env -i PATH="$PATH" "${env[@]}" "$bin" serve > /dev/null 2> "$OUT/token-service.$kind-$alg.$off.err" &
  OURS_PID=$!; PIDS+=("$OURS_PID")
  wait_http "${OURS_URL%/token}/readyz" "${OURS_TLS[@]:0:2}"
  OURS_IDLE_KB=$(rss_kb "$OURS_PID")
}

# start_peer KIND ALG -> PEER_PID, PEER_URL, PEER_TLS, PEER_HDR
start_peer() {
  local kind=$1 alg=$2 mode=mtls port=18443
  if [ -n "${BASE_TS:-}" ]; then
    # Same-run A/B: the earlier build, started exactly like ours on other ports.
    local saved=("$OURS_PID" "$OURS_URL" "$OURS_IDLE_KB") saved_tls=("${OURS_TLS[@]}")
    start_ours "$kind" "$alg" "$BASE_TS" 1000
    PEER_PID=$OURS_PID; PEER_URL=$OURS_URL; PEER_TLS=("${OURS_TLS[@]}"); PEER_HDR=()
    [ "$kind" = xlb ] && PEER_HDR=("${XLB_HEADERS[@]}")
    OURS_PID=${saved[0]}; OURS_URL=${saved[1]}; OURS_IDLE_KB=${saved[2]}; OURS_TLS=("${saved_tls[@]}")
    return 0
  fi
  [ "$kind" = xlb ] && { mode=header; port=18080; }
  MODE=$mode ALG=$alg PORT=$port WORKERS=$PEER_WORKERS CERT_DIR=$PPKI QUIET=1 HEADER_CERT_CACHE=$PEER_CACHE \
    node "$SCRATCH/peer/server.js" >> "$OUT/peer.log" 2>&1 &
  PEER_PID=$!; PIDS+=("$PEER_PID")
  PEER_HDR=(); PEER_TLS=()
  if [ "$mode" = mtls ]; then
    PEER_URL=https://127.0.0.1:$port/token
    PEER_TLS=(--cacert "$PPKI/ca.pem" --cert "$PPKI/client.pem" --key "$PPKI/client-key.pem")
  else
    PEER_URL=http://127.0.0.1:$port/token
    PEER_HDR=(-H "X-SSL-Client-Verify: SUCCESS" -H "X-SSL-Client-Cert: $(cat "$PPKI/client-escaped.txt")")
  fi
  for _ in $(seq 1 200); do
    curl -s -o "$WORK/probe" --max-time 2 "${PEER_TLS[@]}" "${PEER_HDR[@]}" -X POST "$PEER_URL" -d "$PEER_BODY" \
      && grep -q access_token "$WORK/probe" && return 0
    sleep 0.05
  done
  echo "peer did not start (see $OUT/peer.log)" >&2; exit 1
}

# ---- one measured run ---------------------------------------------------------------------
# gen TOOL(oha|loadgen) NEWCONN(0|1) CONC RATE(0=closed loop) SECONDS OUTFILE URL BODY [args...]
gen() {
  local tool=$1 newconn=$2 conc=$3 rate=$4 secs=$5 out=$6 url=$7 body=$8; shift 8
  local tmo=$((${secs%.*} + 30)) pre=()
  [ "${GEN_RT:-0}" = 1 ] && pre=(chrt -r 1)
  if [ "$tool" = oha ]; then
    local q=(); [ "$rate" != 0 ] && q=(-q "$rate" --latency-correction)
    /usr/bin/time -f '%U %S %e' -o "$out.time" "${pre[@]}" timeout -k 5 $tmo oha --no-tui -z "${secs}s" -c "$conc" \
      "${q[@]}" -m POST -T "${GEN_CT:-application/x-www-form-urlencoded}" -d "$body" "$@" \
      --output-format json -o "$out" "$url" > /dev/null
  else
    local q=() n=(); [ "$rate" != 0 ] && q=(--rate "$rate"); [ "$newconn" = 1 ] && n=(--new-conn)
    /usr/bin/time -f '%U %S %e' -o "$out.time" "${pre[@]}" timeout -k 5 $tmo "$LOADGEN" --url "$url" -c "$conc" -z "$secs" \
      "${q[@]}" "${n[@]}" --body "$body" "$@" --json "$out" > /dev/null
  fi
}

parse() { # tool file -> "rps p50_ms p99_ms ok bad"
  python3 - "$1" "$2" <<'EOF'
import json, sys
tool, f = sys.argv[1], sys.argv[2]
d = json.load(open(f))
if tool == 'oha':
    codes = d.get('statusCodeDistribution', {})
    ok = sum(v for k, v in codes.items() if k.startswith('2'))
    bad = sum(v for k, v in codes.items() if not k.startswith('2')) + sum(
        v for k, v in d.get('errorDistribution', {}).items() if 'deadline' not in k)
    p = d['latencyPercentiles']
    print(f"{ok / d['summary']['total']:.1f} {(p['p50'] or 0)*1e3:.3f} {(p['p99'] or 0)*1e3:.3f} {ok} {bad}")
else:
    print(f"{d['rps']:.1f} {d['p50_ms']:.3f} {d['p99_ms']:.3f} {d['ok']} {d['non2xx'] + d['errors']}")
EOF
}

TSV=$OUT/results.tsv
printf 'case\timpl\tload\trep\trps\tp50_ms\tp99_ms\tok\tbad\tserver_cores\tgen_cores\tforeign_cores\tserver_runq_cores\tref_sign_s\trss_before_kb\tpeak_rss_kb\n' > "$TSV"

# measure CASE IMPL LOAD REP PID TOOL NEWCONN CONC RATE URL BODY [args...]
measure() {
  local case=$1 impl=$2 load=$3 rep=$4 pid=$5 tool=$6 newconn=$7 conc=$8 rate=$9 url=${10} body=${11}; shift 11
  local f="$OUT/raw/$case.$impl.$load.r$rep.json" ref pids s0 s1 b0 b1 t0 t1 res cpu before
  ref=$(ref_speed); ref=${ref:-0}
  before=$(rss_kb "$pid")
  pids=$(tree_pids "$pid")
  local q0 q1 m0=
  [ "$case" = iam ] && [ "$impl" = ours ] && m0=$(metric_sums "${url%/token}/metrics")
  q0=$(runq_ns $pids); s0=$(proc_ticks $pids); b0=$(sys_busy_ticks); t0=$(date +%s.%N)
  gen "$tool" "$newconn" "$conc" "$rate" "$DURATION" "$f" "$url" "$body" "$@" || echo "  generator exit $?"
  s1=$(proc_ticks $pids); b1=$(sys_busy_ticks); t1=$(date +%s.%N); q1=$(runq_ns $pids)
  res=$(parse "$tool" "$f")
  cpu=$(python3 -c "
u,s,e=map(float,open('$f.time').read().split()[-3:]); wall=$t1-$t0
srv=($s1-$s0)/100/wall; gen=(u+s)/wall; busy=($b1-$b0)/100/wall
print(f'{srv:.2f} {gen:.2f} {max(0.0,busy-srv-gen):.2f} {($q1-$q0)/1e9/wall:.2f}')")
  if [ -n "$m0" ]; then
    # Inside Token Service: mean time to answer /token minus mean signJwt call (its own metrics).
    python3 -c "
a=list(map(float,'$m0'.split())); b=list(map(float,'$(metric_sums "${url%/token}/metrics")'.split()))
tok=(b[0]-a[0])/max(1,b[1]-a[1])*1e3; sj=(b[2]-a[2])/max(1,b[3]-a[3])*1e3
print(f'$load\t$rep\t{tok:.3f}\t{sj:.3f}\t{tok-sj:.3f}')" >> "$OUT/iam_metrics.tsv"
  fi
  local peak=0
  for p in $(tree_pids "$pid"); do peak=$((peak + $(hwm_kb "$p"))); done
  echo "  $case $impl $load rep $rep: rps p50 p99 ok bad = $res | cores server/gen/foreign/server-runq-wait = $cpu | ref $ref | rss before/peak kB $before/$peak"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "$impl" "$load" "$rep" $res $cpu "$ref" "$before" "$peak" >> "$TSV"
}

rt() { # on|off PID...: real-time round-robin priority 1 for every thread of the processes
  local mode=$1 p; shift
  for p in $(tree_pids "$@"); do
    if [ "$mode" = on ]; then chrt -a -r -p 1 "$p" >/dev/null 2>&1 || true
    else chrt -a -o -p 0 "$p" >/dev/null 2>&1 || true; fi
  done
}

median_rps() { # case impl -> median peak rps so far
  awk -F'\t' -v c="$1" -v i="$2" '$1==c && $2==i && $3=="peak" {print $5}' "$TSV" | sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : 0)}'
}

# ---- 1. ceilings --------------------------------------------------------------------------
if [ "$CEILING" = 1 ]; then
  echo "== ceilings (sign_ceiling)"
  "$BIN/examples/sign_ceiling" --seconds 2 --reps 3 | tee "$OUT/ceilings.tsv"
fi

# ---- 2. load cases ------------------------------------------------------------------------
for case in $CASES; do
  kind=${case%-*}; alg=${case#*-}
  [ "$case" = iam ] && { kind=iam; alg=RS256; }
  echo "== $case"
  tool=oha; newconn=0; conc=$CONC
  [ "$kind" = new ] && { tool=loadgen; newconn=1; }
  if [ "$kind" = iam ]; then
    start_emulator
    conc=$IAM_CONC
  fi
  start_ours "$kind" "$alg"
  OURS_ARGS=("${OURS_TLS[@]}")
  [ "$kind" = xlb ] || [ "$kind" = iam ] && OURS_ARGS+=("${XLB_HEADERS[@]}")
  has_peer=0
  if [ "$PEER" = 1 ] && [ "$kind" != iam ]; then
    start_peer "$kind" "$alg"; has_peer=1
  fi
  # The comparison for iam: the same load straight to the emulator's signJwt.
  if [ "$kind" = iam ]; then
    MDS_TOKEN=$(curl -sf -H 'Metadata-Flavor: Google' "http://127.0.0.1:$EPORT/computeMetadata/v1/instance/service-accounts/default/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    SIGN_URL="http://127.0.0.1:$EPORT/v1/projects/-/serviceAccounts/token-service@demo-project.iam.gserviceaccount.com:signJwt"
    now=$(date +%s)
    SIGN_BODY="{\"payload\":\"{\\\"iss\\\":\\\"https://token-service.bench\\\",\\\"sub\\\":\\\"$SPIFFE\\\",\\\"aud\\\":\\\"bench-audience\\\",\\\"iat\\\":$now,\\\"exp\\\":$((now + 3000)),\\\"jti\\\":\\\"bench\\\"}\"}"
  fi
  gen "$tool" "$newconn" "$conc" 0 "$WARMUP" "$WORK/warm" "$OURS_URL" "$BODY" "${OURS_ARGS[@]}" >/dev/null 2>&1 || true
  [ $has_peer = 1 ] && { gen "$tool" "$newconn" "$conc" 0 "$WARMUP" "$WORK/warm" "$PEER_URL" "$PEER_BODY" "${PEER_TLS[@]}" "${PEER_HDR[@]}" >/dev/null 2>&1 || true; }
  for rep in $(seq 1 "$REPS"); do
    measure "$case" ours peak "$rep" "$OURS_PID" "$tool" "$newconn" "$conc" 0 "$OURS_URL" "$BODY" "${OURS_ARGS[@]}"
    if [ $has_peer = 1 ]; then
      measure "$case" peer peak "$rep" "$PEER_PID" "$tool" "$newconn" "$conc" 0 "$PEER_URL" "$PEER_BODY" "${PEER_TLS[@]}" "${PEER_HDR[@]}"
    fi
    if [ "$kind" = iam ]; then
      GEN_CT=application/json measure "$case" emulator peak "$rep" "$EMU_PID" oha 0 "$conc" 0 "$SIGN_URL" "$SIGN_BODY" \
        -H "Authorization: Bearer $MDS_TOKEN"
    fi
  done
  if [ "$HALF" = 1 ]; then
    ours_half=$(median_rps "$case" ours | awk '{printf "%d", $1 / 2}')
    [ $has_peer = 1 ] && peer_half=$(median_rps "$case" peer | awk '{printf "%d", $1 / 2}')
    half_loads=half; [ "$HALF_RT" = 1 ] && half_loads="half half-rt"
    for half in $half_loads; do
    GEN_RT=0
    if [ "$half" = half-rt ]; then
      GEN_RT=1; rt on "$OURS_PID" ${EMU_PID:+"$EMU_PID"}; [ $has_peer = 1 ] && rt on "$PEER_PID"
    fi
    for rep in $(seq 1 "$REPS"); do
      measure "$case" ours "$half" "$rep" "$OURS_PID" "$tool" "$newconn" "$conc" "$ours_half" "$OURS_URL" "$BODY" "${OURS_ARGS[@]}"
      if [ $has_peer = 1 ]; then
        measure "$case" peer "$half" "$rep" "$PEER_PID" "$tool" "$newconn" "$conc" "$peer_half" "$PEER_URL" "$PEER_BODY" "${PEER_TLS[@]}" "${PEER_HDR[@]}"
      fi
      if [ "$kind" = iam ]; then
        # the emulator alone at the same offered rate: the difference of the medians is what
        # Token Service adds
        GEN_CT=application/json measure "$case" emulator "$half" "$rep" "$EMU_PID" oha 0 "$conc" "$ours_half" "$SIGN_URL" "$SIGN_BODY" \
          -H "Authorization: Bearer $MDS_TOKEN"
      fi
    done
    if [ "$half" = half-rt ]; then
      rt off "$OURS_PID" ${EMU_PID:+"$EMU_PID"}; [ $has_peer = 1 ] && rt off "$PEER_PID"
    fi
    done
    GEN_RT=0
  fi
  stop_pid "$OURS_PID"
  [ $has_peer = 1 ] && stop_pid "$PEER_PID"
  [ -n "$EMU_PID" ] && { stop_pid "$EMU_PID"; EMU_PID=; }
done

# ---- 3. cold start and idle memory --------------------------------------------------------
if [ "$COLD_RUNS" -gt 0 ]; then
  echo "== cold start ($COLD_RUNS runs each)"
  for variant in xlb-ES256 xlb-RS256 mtls-ES256; do
    kind=${variant%-*}; alg=${variant#*-}
    env=(BIND_ADDRESS=127.0.0.1 DATA_DIR="$TSDIR" TOKEN_ISSUER=https://token-service.bench
         TOKEN_AUDIENCE=bench-audience RATE_LIMIT_PER_CLIENT=0 SIGNING_KEY_FILE="$TSDIR/${alg,,}.pem")
    if [ "$kind" = mtls ]; then
      env+=(AUTH_FLOWS=mtls-client-credentials TLS_CERT_FILE="$PKI/server.pem" TLS_KEY_FILE="$PKI/server.key" TLS_CLIENT_CA_FILE="$PKI/ca.pem")
    else
      env+=(AUTH_FLOWS=xlb-mtls-client-credentials)
    fi
    printf '%s\t' "$variant" | tee -a "$OUT/cold_start.tsv"
    env -i PATH="$PATH" "${env[@]}" "$BIN/examples/cold_start" --runs "$COLD_RUNS" --binary "$TS" --cacert "$PKI/ca.pem" | tee -a "$OUT/cold_start.tsv"
  done
fi

python3 "$HERE/summarize.py" "$OUT" | tee "$OUT/summary.md"
echo "results in $OUT"
