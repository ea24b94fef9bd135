# Sourced by the bench scripts that start gateways in the background (tenancy_overhead.sh, workers_counters.sh).
# Needs $AIGW (a Python with aigw and redis-py), $OUT (the run's directory, holding a NAME.pid per gateway) and
# the array PIDS (processes started directly by the script). Loopback only; stops only those processes, by PID.

port() { "$AIGW" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ready() { for _ in $(seq 1 200); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "not ready: $1" >&2; exit 1; }

stop_all() {
  # gateways are started inside $(...), so their PIDs come back through the pid files; not being this shell's
  # children, `wait` does not wait for them: wait (bounded) until they are gone, as their shutdown may still
  # write to Redis, before a caller deletes the run's keys
  for f in "$OUT"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  for f in "$OUT"/*.pid; do
    for _ in $(seq 1 100); do [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.1; done
  done
}

delete_keys() {  # url prefix: this run's Redis keys only
  "$AIGW" -c 'import redis,sys; r=redis.Redis.from_url(sys.argv[1]); ks=list(r.scan_iter(match=sys.argv[2]+"*")); ks and r.delete(*ks)' \
    "$1" "$2" || true
}
