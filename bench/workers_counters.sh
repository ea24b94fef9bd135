#!/usr/bin/env bash
# `aigw serve --workers 2` with tenancy on (bench/configs/tenancy.yaml): the workers' shared rate-limit
# and budget counters kept by the serve parent over a Unix socket ("hosted", no redis_url) against the
# same counters in Redis ("redis"), both in front of the shared fake upstream (0 ms), in ONE interleaved
# run_bench.py call; CPU is each gateway's whole process tree (parent + workers). On a 2-core machine the
# workers, the upstream and the load generator share the cores: compare the two, not against one core.
# Loopback only; every process started here is stopped by PID on exit; the Redis run's keys are deleted.
#
#   bash bench/workers_counters.sh
#   DURATION=5 CONC=16,64 bash bench/workers_counters.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$REPO/../shared/bench}
BPY=${BENCH_PY:-$HERE/.venv/bin/python}
AIGW=${AIGW_PY:-$REPO/.venv/bin/python}
DURATION=${DURATION:-5}; WARMUP=${WARMUP:-1}; REPEAT=${REPEAT:-2}; CONC=${CONC:-16,64}
OUT=${OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)-workers-counters}
KEY=sk-bench-1234
REDIS_URL=${AIGW_BENCH_REDIS_URL:-redis://127.0.0.1:6379/0}
PREFIX="aigw-bench-workers-$$-$(date +%s):"
mkdir -p "$OUT/hosted" "$OUT/redis"
PIDS=()
# shellcheck source=bench/gateways.sh
. "$HERE/gateways.sh"
cleanup() { stop_all; delete_keys "$REDIS_URL" "$PREFIX"; }
trap cleanup EXIT

UP=$(port); "$BPY" "$SHARED/upstream.py" --port "$UP" --delay-ms 0 --chunks 20 > "$OUT/upstream.log" 2>&1 &
PIDS+=($!); ready "http://127.0.0.1:$UP/health"
export AIGW_BENCH_UPSTREAM="http://127.0.0.1:$UP/v1" AIGW_BENCH_KEY=$KEY
start() {  # label redis_url -> port
  local p; p=$(port)
  AIGW_BENCH_PORT=$p AIGW_BENCH_DIR="$OUT/$1" AIGW_BENCH_REDIS_URL=$2 AIGW_BENCH_REDIS_PREFIX=$PREFIX \
    "$AIGW" -m aigw serve --config "$HERE/configs/tenancy.yaml" --port "$p" --workers 2 --log-level warning \
    > "$OUT/$1.log" 2>&1 &
  PIDS+=($!); echo "$!" > "$OUT/$1.pid"; ready "http://127.0.0.1:$p/health/live"; echo "$p"
}
vkey() {  # port -> a key with limits and a budget at every level, none ever reached
  local admin=(--url "http://127.0.0.1:$1" --master-key "$KEY")
  local big=(--rpm 100000000 --tpm 2000000000 --max-parallel 100000 --budget 1000000000 --period total)
  "$AIGW" -m aigw tenants create bench-tenant "${big[@]}" "${admin[@]}" --json > /dev/null
  "$AIGW" -m aigw projects create bench-project --tenant bench-tenant "${big[@]}" "${admin[@]}" --json > /dev/null
  "$AIGW" -m aigw keys create --project bench-project "${big[@]}" "${admin[@]}" --json \
    | "$AIGW" -c 'import json,sys; print(json.load(sys.stdin)["key"])'
}
HOSTED=$(start hosted ""); REDIS=$(start redis "$REDIS_URL")
HKEY=$(vkey "$HOSTED"); RKEY=$(vkey "$REDIS")
"$BPY" "$SHARED/run_bench.py" --target direct="http://127.0.0.1:$UP/v1" \
  --target hosted="http://127.0.0.1:$HOSTED/v1" --pid hosted="$(cat "$OUT/hosted.pid")" \
  --target redis="http://127.0.0.1:$REDIS/v1" --pid redis="$(cat "$OUT/redis.pid")" \
  --header "hosted=Authorization:Bearer $HKEY" --header "redis=Authorization:Bearer $RKEY" \
  --api-key "$KEY" --model bench-model --baseline direct --concurrency "$CONC" --duration "$DURATION" \
  --warmup "$WARMUP" --repeat "$REPEAT" --modes nonstream --out "$OUT/result.json" | tee "$OUT/summary.txt"
