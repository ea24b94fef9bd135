#!/usr/bin/env bash
# aigw gateway benchmark: aigw (one worker, one core) in front of the shared fake
# upstream, measured by the shared harness (../shared/bench/run_bench.py) against
# the upstream itself ("direct") and the shared Python floor proxy ("floor").
#
#   bash bench/run.sh                                   # full run, 10 to 25 minutes
#   QUICK=1 bash bench/run.sh                           # short runs, about 2 minutes
#   bash bench/run.sh --config bench/configs/full.yaml  # features-on config
#   bash bench/run.sh --no-floor --no-profile           # aigw vs direct only
#   bash bench/run.sh --ref HEAD                        # a commit's src/, not the work tree
#
# By default the gateway runs from the work tree (src/, editable install), with
# whatever uncommitted changes it has; --ref REF (or AIGW_REF) runs `git archive
# REF src` instead (put first on PYTHONPATH), so others' work in progress does
# not leak into the figures. machine.txt records which.
#
# What it does, all on loopback, every wait bounded:
#   1. bench venv (aiohttp uvloop orjson, py-spy for the profile) under bench/.venv;
#      wrk via apt-get when missing (run_bench.py falls back to its Python driver);
#   2. fake upstream pinned to LG_CPU (with the load driver), 0 ms delay, CHUNKS chunks;
#   3. the config (--config, default bench/configs/bare.yaml) with AIGW_BENCH_*
#      filled in, written to the results dir and checked with `aigw config check`;
#   4. start-up trials: launch aigw pinned to GW_CPU, time launch -> ready ->
#      first answer, idle RSS 2 s later, stop (STARTUP_TRIALS times);
#   5. aigw (and the floor proxy) started for the load run, PIDs recorded;
#   6. run_bench.py: direct | aigw | floor, c=1,16,64, non-stream (wrk) and stream,
#      one call per cell, a cell re-run when other work on the box disturbed it;
#   7. py-spy record of aigw under c=16 load, non-stream and stream, summarised;
#   8. bench/bar_check.py: the figures against issue 2's bar.
# Everything started here is stopped by PID on exit.
#
# Knobs (env): QUICK DURATION WARMUP REPEAT CONC MODES CHUNKS GW_CPU LG_CPU
#   UP_PORT GW_PORT FLOOR_PORT FLOOR PROFILE PROFILE_SECONDS STARTUP_TRIALS
#   AIGW_BENCH_CONFIG BENCH_VENV AIGW_PY FLOOR_PY SHARED_BENCH OUT NO_APT NICE
#   QUIET_WAIT QUIET_MAX (wait up to QUIET_WAIT s, default 60, for machine CPU busy
#   <= QUIET_MAX %, default 15, before each cell and each profile; then go on anyway)
#   FOREIGN_MAX CELL_TRIES (a (mode, concurrency) cell whose worst run saw more than
#   FOREIGN_MAX %, default 25, foreign CPU is run again, up to CELL_TRIES times, default 3)
#   AIGW_BENCH_REDIS_URL (passed to configs that reference it)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$REPO/../shared/bench}
CONFIG=${AIGW_BENCH_CONFIG:-$HERE/configs/bare.yaml}
FLOOR=${FLOOR:-1}
PROFILE=${PROFILE:-1}
LABEL=""

usage() { sed -n '2,30p' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --config) CONFIG=$2; shift 2 ;;
    --config=*) CONFIG=${1#*=}; shift ;;
    --label) LABEL=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --no-floor) FLOOR=0; shift ;;
    --no-profile) PROFILE=0; shift ;;
    --out) OUT=$2; shift 2 ;;
    --ref) AIGW_REF=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
CONFIG=$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")
[ -f "$CONFIG" ] || { echo "no such config: $CONFIG" >&2; exit 2; }
LABEL=${LABEL:-$(basename "$CONFIG" .yaml)}

if [ "${QUICK:-0}" = 1 ]; then
  DURATION=${DURATION:-3}; WARMUP=${WARMUP:-1}; REPEAT=${REPEAT:-1}
  PROFILE_SECONDS=${PROFILE_SECONDS:-5}; STARTUP_TRIALS=${STARTUP_TRIALS:-1}; CELL_TRIES=${CELL_TRIES:-1}
  QUIET_WAIT=${QUIET_WAIT:-10}
else
  DURATION=${DURATION:-8}; WARMUP=${WARMUP:-2}; REPEAT=${REPEAT:-2}
  PROFILE_SECONDS=${PROFILE_SECONDS:-15}; STARTUP_TRIALS=${STARTUP_TRIALS:-3}; CELL_TRIES=${CELL_TRIES:-3}
  QUIET_WAIT=${QUIET_WAIT:-60}
fi
FOREIGN_MAX=${FOREIGN_MAX:-25}
CONC=${CONC:-1,16,64}
MODES=${MODES:-nonstream,stream}
CHUNKS=${CHUNKS:-20}
GW_CPU=${GW_CPU:-1}
LG_CPU=${LG_CPU:-0}
UP_PORT=${UP_PORT:-18400}
GW_PORT=${GW_PORT:-4400}
FLOOR_PORT=${FLOOR_PORT:-8490}
KEY=${AIGW_BENCH_KEY:-sk-bench-1234}
FLOOR_KEY=sk-floor-1234
MODEL=bench-model
NICE=${NICE:--10}
OUT=${OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)-$LABEL}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { echo "[bench] $*" >&2; }
die() { echo "[bench] ERROR: $*" >&2; exit 1; }
# the shell (and so the load driver it starts) gets scheduling priority, like compare_peers.sh
if [ "$NICE" != 0 ]; then renice -n "$NICE" -p $$ > /dev/null 2>&1 || log "renice failed (not root?), going on"; fi

# ---------------------------------------------------------------- stop by PID
PIDS=()
cleanup() {
  local p i
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM
forget_pid() { # pid: no longer ours to stop (it exited)
  local i keep=()
  for i in "${PIDS[@]}"; do [ "$i" = "$1" ] || keep+=("$i"); done
  PIDS=("${keep[@]}")
}
stop_pid() { # pid: TERM, wait up to 5 s, KILL; forget it
  local p=$1 i
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  forget_pid "$p"
}

# ---------------------------------------------------------------- tools
[ -f "$SHARED/run_bench.py" ] || die "shared harness not found at $SHARED (set SHARED_BENCH)"
BENCH_VENV=${BENCH_VENV:-$HERE/.venv}
if ! "$BENCH_VENV/bin/python" -c 'import aiohttp, uvloop, orjson' 2>/dev/null; then
  log "creating bench venv $BENCH_VENV (aiohttp uvloop orjson)"
  python3 -m venv "$BENCH_VENV"
  timeout 600 "$BENCH_VENV/bin/pip" install -q aiohttp uvloop orjson
fi
BPY=$BENCH_VENV/bin/python
if [ "$PROFILE" = 1 ] && [ ! -x "$BENCH_VENV/bin/py-spy" ]; then
  log "installing py-spy into the bench venv"
  timeout 600 "$BENCH_VENV/bin/pip" install -q py-spy || { log "py-spy install failed: no profile"; PROFILE=0; }
fi
if ! command -v wrk > /dev/null; then
  if [ "${NO_APT:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    log "installing wrk (apt-get)"
    { timeout 300 apt-get update -qq && timeout 300 apt-get install -y -qq wrk; } > "$OUT/apt-wrk.log" 2>&1 \
      || log "wrk install failed, see $OUT/apt-wrk.log"
  fi
  command -v wrk > /dev/null || log "no wrk: non-streaming load uses run_bench.py's Python driver (slower client)"
fi

# the gateway's own interpreter: the repo's .venv (editable install), else a venv made here
AIGW_PY=${AIGW_PY:-$REPO/.venv/bin/python}
if ! "$AIGW_PY" -c 'import aigw' 2>/dev/null; then
  AIGW_PY=$HERE/.gw-venv/bin/python
  if ! "$AIGW_PY" -c 'import aigw' 2>/dev/null; then
    log "installing aigw (editable) into $HERE/.gw-venv"
    python3 -m venv "$HERE/.gw-venv"
    timeout 900 "$HERE/.gw-venv/bin/pip" install -q -e "$REPO"
  fi
fi
SRC_DESC="work tree $REPO/src"
if [ -n "${AIGW_REF:-}" ]; then
  REF_SHA=$(git -C "$REPO" rev-parse --verify "${AIGW_REF}^{commit}") || die "no such git ref: $AIGW_REF"
  mkdir -p "$OUT/src-$REF_SHA"
  git -C "$REPO" archive "$REF_SHA" src | tar -x -C "$OUT/src-$REF_SHA"
  export PYTHONPATH="$OUT/src-$REF_SHA/src${PYTHONPATH:+:$PYTHONPATH}"
  SRC_DESC="git archive of $AIGW_REF = $REF_SHA"
fi
# Start-up is timed the way an installed gateway starts: with its .pyc files there
# (pip compiles them at install). In --ref mode the archive is compiled after one
# "cold" trial (no .pyc, timed and reported apart); in work-tree mode the
# environment is left as it is (PYTHONDONTWRITEBYTECODE=1 means a cold start every time).
PYC_NOTE="work tree: environment as is (PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-unset})"
AIGW_SRC=$("$AIGW_PY" -c 'import aigw, os; print(os.path.dirname(aigw.__file__))')
log "aigw imported from $AIGW_SRC ($SRC_DESC)"
AIGW_BIN=$(dirname "$AIGW_PY")/aigw
if [ -x "$AIGW_BIN" ]; then AIGW_CMD=("$AIGW_BIN"); else AIGW_CMD=("$AIGW_PY" -c 'from aigw.cli.main import main; main()'); fi
# the floor proxy runs on the gateway's interpreter: same uvicorn/uvloop/httptools/aiohttp/orjson
FLOOR_PY=${FLOOR_PY:-$AIGW_PY}
if [ "$FLOOR" = 1 ] && ! "$FLOOR_PY" -c 'import uvicorn, uvloop, httptools, aiohttp, orjson' 2>/dev/null; then
  log "floor needs uvicorn uvloop httptools aiohttp orjson in $FLOOR_PY: no floor"; FLOOR=0
fi

port_free() { "$BPY" -c "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', $1))" 2>/dev/null; }
for p in "$UP_PORT" "$GW_PORT" $([ "$FLOOR" = 1 ] && echo "$FLOOR_PORT"); do
  port_free "$p" || die "port $p is busy on 127.0.0.1 (set UP_PORT / GW_PORT / FLOOR_PORT)"
done
wait_quiet() { # phase: wait (bounded by QUIET_WAIT s) until other work on the box stops
  "$BPY" - "$1" "$QUIET_WAIT" "${QUIET_MAX:-15}" <<'PYEOF' >&2 || true
import sys, time
phase, limit, max_busy = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
def busy():
    def snap():
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(v) - v[3] - v[4], sum(v)
    b0, t0 = snap(); time.sleep(1.0); b1, t1 = snap()
    return 100.0 * (b1 - b0) / max(1, t1 - t0)
end = time.monotonic() + limit
while True:
    b = busy()
    if b <= max_busy:
        print(f"[bench] {phase}: machine busy {b:.0f}% (<= {max_busy:.0f}%), going on"); break
    if time.monotonic() >= end:
        print(f"[bench] {phase}: machine still busy {b:.0f}% after {limit:.0f} s of waiting: "
              "other work on the box, figures will be noisy (see frgn% in the tables)"); break
    time.sleep(2.0)
PYEOF
}
wait_http() { # url seconds
  local i
  for i in $(seq 1 $(( $2 * 50 ))); do curl -s -o /dev/null -f "$1" && return 0; sleep 0.02; done
  return 1
}

# ---------------------------------------------------------------- machine + versions
{
  echo "date: $(date -Is)"
  echo "label: $LABEL  config: ${CONFIG#$REPO/}"
  echo "git: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') ($(git -C "$REPO" log -1 --format=%s 2>/dev/null || true))"
  echo "gateway code: $SRC_DESC"
  if [ -z "${AIGW_REF:-}" ]; then
    echo "uncommitted files under src/ at start (they are in the measured code): $(git -C "$REPO" status --porcelain -- src 2>/dev/null | wc -l)"
    git -C "$REPO" status --porcelain -- src 2>/dev/null | sed 's/^/  /' || true
  fi
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "memory: $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel: $(uname -r)"
  echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "gateway python: $("$AIGW_PY" -c 'import sys; print(sys.version.split()[0])') ($AIGW_PY)"
  "$AIGW_PY" -c "import importlib.metadata as m
print('gateway libs:', ' '.join(f'{p}={m.version(p)}' for p in ['aigw','uvicorn','uvloop','httptools','aiohttp','orjson','pydantic']))"
  "$BPY" -c "import sys, aiohttp, uvloop, orjson; print('harness: python', sys.version.split()[0], 'aiohttp', aiohttp.__version__, 'uvloop', uvloop.__version__, 'orjson', orjson.__version__)"
  if command -v wrk > /dev/null; then echo "wrk: $(wrk -v 2>&1 | head -1 || true)"; else echo "wrk: none (Python driver)"; fi
  echo "PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-}"
  echo "layout: upstream + load driver + py-spy on cpu $LG_CPU; gateway and floor (one process each) on cpu $GW_CPU"
  echo "run: duration=${DURATION}s warmup=${WARMUP}s repeat=$REPEAT conc=$CONC modes=$MODES chunks=$CHUNKS cell_tries=$CELL_TRIES foreign_max=${FOREIGN_MAX}%"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt" >&2

# ---------------------------------------------------------------- upstream
taskset -c "$LG_CPU" "$BPY" "$SHARED/upstream.py" --port "$UP_PORT" --delay-ms 0 --chunks "$CHUNKS" \
  > "$OUT/upstream.log" 2>&1 &
UP_PID=$!; PIDS+=("$UP_PID")
wait_http "http://127.0.0.1:$UP_PORT/health" 15 || die "fake upstream did not start (see $OUT/upstream.log)"
log "fake upstream pid $UP_PID on 127.0.0.1:$UP_PORT (cpu $LG_CPU)"

# ---------------------------------------------------------------- gateway config
export AIGW_BENCH_UPSTREAM="http://127.0.0.1:$UP_PORT/v1" AIGW_BENCH_KEY="$KEY" AIGW_BENCH_PORT="$GW_PORT"
export AIGW_BENCH_DIR="$OUT" AIGW_BENCH_REDIS_URL="${AIGW_BENCH_REDIS_URL:-}"
"$BPY" - "$CONFIG" "$OUT/gateway.yaml" <<'PYEOF'
import os, re, sys
text = open(sys.argv[1]).read()
def fill(m):
    name, default = m.group(1), m.group(2)
    return os.environ.get(name, default or "")
# fill only our own AIGW_BENCH_* variables; anything else stays for the gateway to resolve
out = re.sub(r"\$\{(AIGW_BENCH_[A-Z0-9_]*)(?::-([^}]*))?\}", fill, text)
open(sys.argv[2], "w").write(f"# written by bench/run.sh from {sys.argv[1]}\n" + out)
PYEOF
(cd "$OUT" && "${AIGW_CMD[@]}" config check "$OUT/gateway.yaml") >&2 || die "config check failed for $OUT/gateway.yaml"

start_gateway() { # sets GW_PID and GW_T0
  cd "$OUT"
  GW_T0=$(date +%s.%N)
  taskset -c "$GW_CPU" "${AIGW_CMD[@]}" serve --config "$OUT/gateway.yaml" --host 127.0.0.1 --port "$GW_PORT" \
    --workers 1 >> "$OUT/aigw.log" 2>&1 &
  GW_PID=$!; PIDS+=("$GW_PID")
  cd - > /dev/null
}
measure_start() { # who pid t0 base ready_path key idle_after
  taskset -c "$LG_CPU" "$BPY" "$HERE/startup.py" --t0 "$3" --pid "$2" --base "$4" --ready-path "$5" --key "$6" --model "$MODEL" \
    --idle-after "$7" --timeout 30 | "$BPY" -c "import json,sys; r=json.loads(sys.stdin.read()); r['who']='$1'; print(json.dumps(r))" \
    | tee -a "$OUT/startup.jsonl" >&2
}

# ---------------------------------------------------------------- start-up trials
: > "$OUT/startup.jsonl"
if [ -n "${AIGW_REF:-}" ]; then
  start_gateway
  measure_start aigw-cold "$GW_PID" "$GW_T0" "http://127.0.0.1:$GW_PORT" /health/ready "$KEY" 0 \
    || { tail -20 "$OUT/aigw.log" >&2; die "aigw did not answer (cold trial)"; }
  stop_pid "$GW_PID"
  "$AIGW_PY" -m compileall -q "$OUT/src-$REF_SHA/src" > /dev/null
  unset PYTHONDONTWRITEBYTECODE
  PYC_NOTE="--ref: one cold trial without .pyc (who=aigw-cold), then the archive compiled (compileall) for the timed trials"
fi
echo "start-up: $PYC_NOTE" >> "$OUT/machine.txt"
for i in $(seq 1 "$STARTUP_TRIALS"); do
  start_gateway
  measure_start aigw "$GW_PID" "$GW_T0" "http://127.0.0.1:$GW_PORT" /health/ready "$KEY" 2 \
    || { tail -20 "$OUT/aigw.log" >&2; die "aigw did not answer (trial $i)"; }
  stop_pid "$GW_PID"
done

# ---------------------------------------------------------------- gateways for the load run
start_gateway
measure_start aigw "$GW_PID" "$GW_T0" "http://127.0.0.1:$GW_PORT" /health/ready "$KEY" 2 \
  || { tail -20 "$OUT/aigw.log" >&2; die "aigw did not answer"; }
log "aigw pid $GW_PID on 127.0.0.1:$GW_PORT (cpu $GW_CPU), log $OUT/aigw.log"
TARGETS=(--target "direct=http://127.0.0.1:$UP_PORT/v1" --target "aigw=http://127.0.0.1:$GW_PORT/v1")
PIDARGS=(--pid "direct=$UP_PID" --pid "aigw=$GW_PID")
HDRS=(); AIGW_HDRS=()
# A config with the line "# bench: virtual-key" is measured with a virtual key:
# tenant, project and key created through the admin CLI, limits and budget far
# above what the run uses (so every check runs and none refuses).
if grep -q '^# bench: virtual-key' "$CONFIG"; then
  admin=(--url "http://127.0.0.1:$GW_PORT" --master-key "$KEY")
  big=(--rpm 100000000 --tpm 2000000000 --budget 1000000000 --period total)
  { "${AIGW_CMD[@]}" tenants create bench-tenant "${big[@]}" "${admin[@]}" --json \
    && "${AIGW_CMD[@]}" projects create bench-project --tenant bench-tenant "${big[@]}" "${admin[@]}" --json \
    && "${AIGW_CMD[@]}" keys create --project bench-project --name bench "${big[@]}" "${admin[@]}" --json > "$OUT/vkey.json"
  } > "$OUT/vkey-setup.log" 2>&1 || true
  VKEY=$("$BPY" -c "import json,sys; print(json.load(open(sys.argv[1]))['key'])" "$OUT/vkey.json" 2>/dev/null || true)
  if [ -n "$VKEY" ]; then
    AIGW_HDRS+=(--header "aigw=Authorization:Bearer $VKEY"); HDRS+=("${AIGW_HDRS[@]}")
    log "load goes through virtual key ${VKEY:0:12}... (tenant bench-tenant, project bench-project)"
    echo "auth: virtual key (tenant bench-tenant, project bench-project)" >> "$OUT/machine.txt"
  else
    log "WARNING: virtual key setup failed ($(tail -1 "$OUT/vkey-setup.log")): measuring with the master key"
    echo "auth: master key (virtual key setup failed: $(tail -1 "$OUT/vkey-setup.log"))" >> "$OUT/machine.txt"
  fi
fi
if [ "$FLOOR" = 1 ]; then
  FL_T0=$(date +%s.%N)
  taskset -c "$GW_CPU" "$FLOOR_PY" "$SHARED/floor_proxy.py" --port "$FLOOR_PORT" --key "$FLOOR_KEY" \
    --route "$MODEL=http://127.0.0.1:$UP_PORT/v1" > "$OUT/floor.log" 2>&1 &
  FL_PID=$!; PIDS+=("$FL_PID")
  measure_start floor "$FL_PID" "$FL_T0" "http://127.0.0.1:$FLOOR_PORT" /health "$FLOOR_KEY" 2 \
    || die "floor proxy did not answer (see $OUT/floor.log)"
  log "floor proxy pid $FL_PID on 127.0.0.1:$FLOOR_PORT (cpu $GW_CPU)"
  TARGETS+=(--target "floor=http://127.0.0.1:$FLOOR_PORT/v1")
  PIDARGS+=(--pid "floor=$FL_PID")
  HDRS+=(--header "floor=Authorization:Bearer $FLOOR_KEY")
fi

# ---------------------------------------------------------------- load
# One run_bench.py call per (mode, concurrency) cell, all targets interleaved in it.
# A cell is run again (at most CELL_TRIES times in all) until every target has
# REPEAT runs that saw at most FOREIGN_MAX % machine CPU from other work on the box;
# merge_cells.py keeps, per target, the REPEAT least disturbed runs over all tries
# and counts errors from every try.
log "run_bench.py: ${CONC} x ${MODES}, ${DURATION}s x ${REPEAT} (+${WARMUP}s warmup) per target and cell"
IFS=, read -ra LMODES <<< "$MODES"
IFS=, read -ra LCONC <<< "$CONC"
mkdir -p "$OUT/cells"
CELL_FILES=()
for mode in "${LMODES[@]}"; do
  for c in "${LCONC[@]}"; do
    for try in $(seq 1 "$CELL_TRIES"); do
      wait_quiet "$mode c=$c try $try"
      f="$OUT/cells/$mode-c$c-try$try"
      "$BPY" "$SHARED/run_bench.py" "${TARGETS[@]}" "${PIDARGS[@]}" "${HDRS[@]}" \
        --model "$MODEL" --api-key "$KEY" --baseline direct \
        --concurrency "$c" --duration "$DURATION" --warmup "$WARMUP" --repeat "$REPEAT" \
        --modes "$mode" --min-chunks "$CHUNKS" --loadgen-cpu "$LG_CPU" --request-timeout 30 \
        --note "aigw bench/run.sh ($LABEL); upstream 0 ms, $CHUNKS chunks; gateways 1 process each on cpu $GW_CPU; upstream+driver on cpu $LG_CPU" \
        --out "$f.json" > "$f.txt" 2>&1 &
      RB_PID=$!; PIDS+=("$RB_PID")
      wait "$RB_PID" || { tail -30 "$f.txt" >&2; die "run_bench.py failed ($f.txt)"; }
      forget_pid "$RB_PID"
      CELL_FILES+=("$f.json")
      grep '^\[[0-9]' "$f.txt" | cut -c1-160 >&2 || true
      # clean enough when every target has REPEAT runs (over all tries) at <= FOREIGN_MAX % foreign CPU
      if worst=$("$BPY" "$HERE/merge_cells.py" --shared "$SHARED" --check "$FOREIGN_MAX" "$OUT/cells/$mode-c$c-try"*.json); then
        break
      fi
      log "$mode c=$c after try $try: the least disturbed runs still saw up to ${worst}% foreign CPU (> $FOREIGN_MAX%)$([ "$try" -lt "$CELL_TRIES" ] && echo ', running the cell again')"
    done
  done
done
"$BPY" "$HERE/merge_cells.py" --shared "$SHARED" --out "$OUT/bench.json" "${CELL_FILES[@]}" > "$OUT/bench.txt"
sed -n '/^== nonstream/,$p' "$OUT/bench.txt"

# ---------------------------------------------------------------- profile
if [ "$PROFILE" = 1 ]; then
  IFS=, read -ra PMODES <<< "$MODES"
  for mode in "${PMODES[@]}"; do
    wait_quiet "before the $mode profile"
    log "profiling aigw: py-spy ${PROFILE_SECONDS}s under c=16 $mode load"
    "$BPY" "$SHARED/run_bench.py" --target "aigw=http://127.0.0.1:$GW_PORT/v1" --pid "aigw=$GW_PID" "${AIGW_HDRS[@]}" \
      --model "$MODEL" --api-key "$KEY" --concurrency 16 --duration $(( PROFILE_SECONDS + 2 )) --warmup 0 \
      --repeat 1 --modes "$mode" --min-chunks "$CHUNKS" --loadgen-cpu "$LG_CPU" --cooldown 0 \
      --note "load for the py-spy profile" --out "$OUT/profile-$mode-load.json" > "$OUT/profile-$mode-load.txt" 2>&1 &
    LOAD_PID=$!; PIDS+=("$LOAD_PID")
    sleep 1
    timeout $(( PROFILE_SECONDS + 30 )) taskset -c "$LG_CPU" "$BENCH_VENV/bin/py-spy" record --pid "$GW_PID" \
      --duration "$PROFILE_SECONDS" --rate 250 --nonblocking --format raw -o "$OUT/profile-$mode.txt" \
      > "$OUT/profile-$mode-pyspy.log" 2>&1 || log "py-spy failed, see $OUT/profile-$mode-pyspy.log"
    wait "$LOAD_PID" || log "profile load run failed, see $OUT/profile-$mode-load.txt"
    forget_pid "$LOAD_PID"
    if [ -s "$OUT/profile-$mode.txt" ]; then
      "$BPY" "$HERE/profile_summary.py" "$OUT/profile-$mode.txt" --top 15 > "$OUT/profile-$mode-summary.txt"
      sed -n '1,40p' "$OUT/profile-$mode-summary.txt"
    fi
  done
fi

# ---------------------------------------------------------------- report
echo
echo "== $LABEL: aigw against issue 2's bar (same box, same run) =="
"$BPY" "$HERE/bar_check.py" "$OUT" | tee "$OUT/bar.txt"
"$BPY" "$HERE/bar_check.py" "$OUT" --md > "$OUT/bar.md"
"$BPY" "$SHARED/summary_md.py" "$OUT/bench.json" > "$OUT/summary.md" 2>/dev/null || true
grep -E '"error"' "$OUT/startup.jsonl" >&2 || true
echo "aigw.log: $(grep -cE ' (ERROR|CRITICAL) |Traceback' "$OUT/aigw.log" || true) ERROR/Traceback lines"
echo "results in $OUT"
