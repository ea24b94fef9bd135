#!/usr/bin/env bash
# Issue 4's overhead bar: aigw with virtual keys + limits + budgets + spend ledger
# ("tenancy", bench/configs/tenancy.yaml) against the same gateway with all of it
# off ("bare", bench/configs/bare.yaml), both in front of the shared fake upstream
# (0 ms), measured in ONE interleaved run_bench.py call so that other load on the
# machine hits both alike. Loopback only; every process started here is stopped
# by PID on exit.
#
#   bash bench/tenancy_overhead.sh                 # embedded: memory counters + SQLite ledger
#   REDIS=1 bash bench/tenancy_overhead.sh         # scaled hot state: Redis Lua counters
#   DURATION=5 CONC=1,16,64 MODES=nonstream,stream bash bench/tenancy_overhead.sh
#   SKIP_LOAD=1 bash bench/tenancy_overhead.sh   # only the CPU-per-request comparison (bench/tenancy_cpu.py)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$REPO/../shared/bench}
BPY=${BENCH_PY:-$HERE/.venv/bin/python}
AIGW=${AIGW_PY:-$REPO/.venv/bin/python}
DURATION=${DURATION:-5}; WARMUP=${WARMUP:-1}; REPEAT=${REPEAT:-2}; CONC=${CONC:-1,16,64}
MODES=${MODES:-nonstream,stream}
OUT=${OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)-tenancy-overhead}
KEY=sk-bench-1234
mkdir -p "$OUT"
PIDS=()
# shellcheck source=bench/gateways.sh
. "$HERE/gateways.sh"
cleanup() {
  stop_all
  if [ -n "${AIGW_BENCH_REDIS_PREFIX:-}" ]; then delete_keys "$AIGW_BENCH_REDIS_URL" "$AIGW_BENCH_REDIS_PREFIX"; fi
}
trap cleanup EXIT

UP=$(port); taskset -c 0 "$BPY" "$SHARED/upstream.py" --port "$UP" --delay-ms 0 --chunks 20 > "$OUT/upstream.log" 2>&1 &
PIDS+=($!); ready "http://127.0.0.1:$UP/health"
export AIGW_BENCH_UPSTREAM="http://127.0.0.1:$UP/v1" AIGW_BENCH_KEY=$KEY AIGW_BENCH_DIR=$OUT
if [ "${REDIS:-0}" = 1 ]; then  # a prefix of this run's own: no state shared with other runs (breakers!)
  export AIGW_BENCH_REDIS_URL=${AIGW_BENCH_REDIS_URL:-redis://127.0.0.1:6379/0}
  export AIGW_BENCH_REDIS_PREFIX="aigw-bench-$$-$(date +%s):"
fi
start() {  # label config -> port
  local p; p=$(port)
  AIGW_BENCH_PORT=$p AIGW_BENCH_DIR="$OUT/$1" taskset -c 1 "$AIGW" -m aigw serve --config "$2" --port "$p" \
    --log-level warning > "$OUT/$1.log" 2>&1 &
  PIDS+=($!); echo "$!" > "$OUT/$1.pid"; ready "http://127.0.0.1:$p/health/live"; echo "$p"
}
mkdir -p "$OUT/bare" "$OUT/tenancy"
BARE=$(start bare "$HERE/configs/bare.yaml")
TEN=$(start tenancy "$HERE/configs/tenancy.yaml")
admin=(--url "http://127.0.0.1:$TEN" --master-key "$KEY")
big=(--rpm 100000000 --tpm 2000000000 --max-parallel 100000 --budget 1000000000 --period total)
"$AIGW" -m aigw tenants create bench-tenant "${big[@]}" "${admin[@]}" --json > /dev/null
"$AIGW" -m aigw projects create bench-project --tenant bench-tenant "${big[@]}" "${admin[@]}" --json > /dev/null
VKEY=$("$AIGW" -m aigw keys create --project bench-project "${big[@]}" "${admin[@]}" --json \
       | "$AIGW" -c 'import json,sys; print(json.load(sys.stdin)["key"])')
[ "${SKIP_LOAD:-0}" = 1 ] || "$BPY" "$SHARED/run_bench.py" --target direct="http://127.0.0.1:$UP/v1" \
  --target bare="http://127.0.0.1:$BARE/v1" --pid bare="$(cat "$OUT/bare.pid")" \
  --target tenancy="http://127.0.0.1:$TEN/v1" --pid tenancy="$(cat "$OUT/tenancy.pid")" \
  --header "tenancy=Authorization:Bearer $VKEY" --api-key "$KEY" --model bench-model --baseline direct \
  --concurrency "$CONC" --duration "$DURATION" --warmup "$WARMUP" --repeat "$REPEAT" --modes "$MODES" \
  --min-chunks 20 --loadgen-cpu 0 --out "$OUT/result.json" | tee "$OUT/summary.txt"
echo "--- CPU per request, alternating wrk runs (c=16) ---" | tee -a "$OUT/summary.txt"
"$AIGW" "$HERE/tenancy_cpu.py" --rounds "${ROUNDS:-6}" --seconds "${CPU_SECONDS:-3}" \
  --target "bare=http://127.0.0.1:$BARE,$(cat "$OUT/bare.pid"),$KEY" \
  --target "tenancy=http://127.0.0.1:$TEN,$(cat "$OUT/tenancy.pid"),$VKEY" | tee -a "$OUT/summary.txt"
ROWS=$("$AIGW" -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from spend_ledger").fetchone()[0])' "$OUT/tenancy/aigw-bench.db")
echo "spend ledger rows written by the tenancy gateway: $ROWS" | tee -a "$OUT/summary.txt"
