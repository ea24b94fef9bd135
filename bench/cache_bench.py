#!/usr/bin/env python3
"""Response cache: a hit against a miss, memory and Redis, beside what the HTTP server alone costs.

  .venv/bin/python bench/cache_bench.py [--duration 3] [--config bare|default|PATH]
      [--backends off,memory,redis] [--kinds plain,stream] [--conc 1,16] [--no-floor]
      [--rounds 1] [--ref REF] [--in-process 5000] [--json out.json]

Issue 5's bar: a hit served at least 5x faster than the core issue's bench
(bench/run.sh with bench/configs/bare.yaml) measures a miss against a 0 ms
upstream. So by default every gateway here runs that bare config (master key, no
tenancy, no metrics, no request log), plus a ``cache:`` block for the memory
and Redis runs; ``--config default`` runs the gateway's defaults instead
(metrics, SQLite request log and ledger, tenancy), which hits and misses both
pay for.

Targets, each its own process pinned to CPU 1 (the upstream and wrk on CPU 0):
  direct   the fake upstream itself (on CPU 0): what the core bench's "added latency"
           is added to, so the summary also gives each p50 at one client over it
  floor    a raw uvicorn + uvloop + httptools ASGI app (no gateway code) that
           reads the body and sends a fixed answer of the same size and shape
           (plain: one JSON body; stream: the frames a replayed hit sends)
  floor-aigw  the same app on aigw's own HTTP server (the gateway's default)
  floor-raw   no ASGI at all: an asyncio protocol with httptools that writes the same
           answer from its parser callback (no task, no app call): what parsing and
           the kernel's loopback cost, the least any Python server can do
  off      the config without a cache block: every request a miss (the core bench)
  memory   exact cache in process memory: miss (every question new) and hit
  redis    exact cache in Redis under a per-run key prefix, deleted afterwards

Every cell is one wrk run (C, HdrHistogram percentiles; a Lua script makes each
miss a new question and counts as an error any answer that is not a 200, lacks
the expected ``x-aigw-cache`` header, or is a stream not ending in ``[DONE]``).
A stream's latency is the whole stream. "hit" = a pool of 64 questions asked
before the timed run. Gateway CPU per request is the target process's own user +
system time over the run, divided by the requests served. Before each run the
bench waits (bounded) for the machine to be quiet and reports how busy it was.

Every target runs from the start (an idle server costs nothing) and the cells
go round by round over all of them, so a spell of noise on this shared box
hits every target alike; ``--rounds N`` keeps each cell's least disturbed
figures (lowest p50, p99 and CPU, highest req/s). ``--ref REF`` also runs every
backend from that commit's ``src/`` (``git archive``), as ``NAME@REF``: a
before/after comparison under the same conditions.

Loopback only, every wait bounded, only processes started here are stopped (by PID).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
UPSTREAM = REPO.parent / "shared" / "bench" / "upstream.py"
BARE = REPO / "bench" / "configs" / "bare.yaml"
KEY = "sk-cache-bench"
POOL = 64
WRK_LUA = """
local mode, tid, n = "%(mode)s", 0, 0
local threads = {}
function setup(thread) thread:set("tid", #threads + 1); table.insert(threads, thread) end
function init(args) tid = tonumber(wrk.thread:get("tid")) or 1 end
bad = 0
function request()
  n = n + 1
  local q
  if mode == "hit" then q = "cached question " .. (n %% %(pool)d) else q = "fresh %(run)s " .. tid .. " " .. n end
  local body = '{"model":"bench-model",%(stream)s"messages":[{"role":"user","content":"' .. q .. '"}]}'
  return wrk.format("POST", "/v1/chat/completions",
                    {["content-type"] = "application/json", ["authorization"] = "Bearer %(key)s"}, body)
end
function response(status, headers, body)
  if status ~= 200 or ("%(expect)s" ~= "" and headers["x-aigw-cache"] ~= "%(expect)s")
     or (%(is_stream)s and string.sub(body, -14) ~= "data: [DONE]\\n\\n") then bad = bad + 1 end
end
function done(summary, latency, requests)
  local errs = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout
  for _, t in ipairs(threads) do errs = errs + (tonumber(t:get("bad")) or 0) end
  io.write(string.format('WRKJSON {"requests": %%d, "seconds": %%f, "p50": %%f, "p99": %%f, "errors": %%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000, errs))
end
"""

# -- the floor: what uvicorn + httptools + uvloop cost with no gateway code ------------------
_HEAD = (b'{"id":"chatcmpl-22ff000000000003","object":"chat.completion.chunk","created":1795677161,'
         b'"model":"bench-model","system_fingerprint":"fp_fake","choices":[{"index":0,')
FLOOR_PLAIN = (
    b'{"id":"chatcmpl-22ff000000000001","object":"chat.completion","created":1795677161,"model":"bench-model",'
    b'"system_fingerprint":"fp_fake","choices":[{"index":0,"message":{"role":"assistant","content":"lorem ipsum '
    b'dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et","refusal":null},'
    b'"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":16,"total_tokens":21}}'
)
FLOOR_FRAMES = [  # what a replayed hit sends: role, content, finish, [DONE] (usage hidden: not asked for)
    b"data: " + _HEAD + b'"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n',
    b"data: " + _HEAD + b'"delta":{"content":"lorem ipsum dolor sit amet consectetur adipiscing elit sed do '
    b'eiusmod tempor incididunt ut labore et"},"logprobs":null,"finish_reason":null}]}\n\n',
    b"data: " + _HEAD + b'"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n',
    b"data: [DONE]\n\n",
]


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    if b'"stream":true' in body:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]})
        for frame in FLOOR_FRAMES:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(FLOOR_PLAIN)).encode())]})
    await send({"type": "http.response.body", "body": FLOOR_PLAIN})


class _RawFloor(asyncio.Protocol):
    """``floor-raw``: parse with httptools and answer from the parser callback, no ASGI and no task."""

    PLAIN = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
             % (len(FLOOR_PLAIN), FLOOR_PLAIN))
    STREAM = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
              b"transfer-encoding: chunked\r\n\r\n" + b"".join(b"%x\r\n%b\r\n" % (len(f), f) for f in FLOOR_FRAMES)
              + b"0\r\n\r\n")

    def connection_made(self, transport: Any) -> None:
        import httptools

        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.body = b""

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.transport.write(self.STREAM if b'"stream":true' in self.body else self.PLAIN)
        self.body = b""


def serve_floor(port: int, server: str) -> None:
    if server == "raw":
        import uvloop

        async def raw() -> None:
            server = await asyncio.get_running_loop().create_server(_RawFloor, "127.0.0.1", port)
            await server.serve_forever()

        uvloop.run(raw())
        return
    if server == "aigw":  # the same app on aigw's own HTTP server (aigw/http/http1_server.py)
        from aigw.http.http1_server import run

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
                return
            await floor_app(scope, receive, send)

        run(app, "127.0.0.1", port)
        return
    import uvicorn

    uvicorn.run(floor_app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", lifespan="off",
                access_log=False, log_config=None, log_level="warning")


# -- plumbing --------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else argv


def wait_http(url: str, timeout_s: float = 20, method: str = "GET") -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method=method,
                                                               data=b"{}" if method == "POST" else None), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop one process this bench started, by its PID (taskset execs, so it is the server itself)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def busy_pct(window_s: float = 1.0) -> float:
    """Share of all CPUs busy over ``window_s`` (from /proc/stat), 0 where it cannot be read."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(x) for x in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    try:
        t0, i0 = sample()
        time.sleep(window_s)
        t1, i1 = sample()
    except OSError:
        return 0.0
    return 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))


def wait_quiet(max_busy: float, timeout_s: float) -> float:
    """Wait (bounded) until the machine is mostly idle; returns the last busy % seen."""
    deadline = time.monotonic() + timeout_s
    busy = busy_pct()
    while busy > max_busy and time.monotonic() < deadline:
        busy = busy_pct()
    return busy


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux); the gateway's own work, whatever else runs."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- configs ---------------------------------------------------------------------------------
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def from_file(path: Path, values: dict[str, str]) -> dict[str, Any]:
    """A bench config file (``${AIGW_BENCH_*:-default}`` placeholders) filled with this run's values."""
    import yaml

    text = _VAR.sub(lambda m: values.get(m.group(1), m.group(2) or ""), path.read_text())
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def gateway_config(name: str, backend: str, upstream: str, port: int, redis_url: str, prefix: str,
                   tmp: Path) -> dict[str, Any]:
    db = tmp / f"{backend}.db"  # the ledger and request log of this run (default config), thrown away after
    if name == "default":
        config: dict[str, Any] = {
            "server": {"host": "127.0.0.1", "port": port, "master_key": KEY}, "database_url": f"sqlite:///{db}",
            "models": [{"name": "bench-model", "provider": "openai_compatible", "model": "bench-model",
                        "api_base": upstream, "api_key": "sk-fake"}],
        }
    else:
        config = from_file(BARE if name == "bare" else Path(name), {
            "AIGW_BENCH_PORT": str(port), "AIGW_BENCH_KEY": KEY, "AIGW_BENCH_DIR": str(tmp),
            "AIGW_BENCH_UPSTREAM": upstream, "AIGW_BENCH_REDIS_URL": redis_url})
        config["database_url"] = f"sqlite:///{db}"
    if backend != "off":
        # timeout_ms 250 (default 50): a GC pause of the default config (~60 ms, seen here) would otherwise
        # time out one Redis lookup and skip the backend for retry_after_s, turning 2 s of hits into misses
        config["cache"] = {"mode": "exact", "backend": backend, "ttl_s": 3600, "max_entries": 100_000,
                           "timeout_ms": 250}
    if backend == "redis":
        config.update(redis_url=redis_url, redis_prefix=prefix)
    return config


# -- load --------------------------------------------------------------------------------------
def run_wrk(url: str, kind: str, mode: str, conc: int, duration: float, expect: str) -> dict[str, Any]:
    stream = kind == "stream"
    script = WRK_LUA % {"mode": mode, "pool": POOL, "run": uuid.uuid4().hex[:8], "key": KEY, "expect": expect,
                        "stream": '"stream":true,' if stream else "", "is_stream": "true" if stream else "false"}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        argv = pinned(0, ["wrk", "-t1", f"-c{conc}", f"-d{max(1, round(duration))}s", "--latency", "-s", f.name, url])
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30).stdout
    finally:
        os.unlink(f.name)
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result:\n{out}")
    r = json.loads(line[8:])
    return {"rps": r["requests"] / r["seconds"], "p50": r["p50"], "p99": r["p99"], "errors": r["errors"],
            "requests": r["requests"]}


def warm_hits(base: str, kind: str) -> None:
    """Ask the pool's questions once, so the timed run finds each in the cache."""
    import urllib.request

    for i in range(POOL):
        messages = [{"role": "user", "content": f"cached question {i}"}]
        body: dict[str, Any] = {"model": "bench-model", "messages": messages}
        if kind == "stream":
            body = {"model": "bench-model", "stream": True, "messages": messages}
        req = urllib.request.Request(base + "/v1/chat/completions", json.dumps(body).encode(),
                                     {"content-type": "application/json", "authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
    time.sleep(0.3)  # Redis stores happen off the request path


@dataclass
class Target:
    """One server under test: the floor, or aigw with a backend, from the work tree or from ``--ref``."""

    name: str  # floor, off, memory, redis; with "@REF" when run from a commit
    backend: str  # floor, off, memory, redis
    port: int
    proc: subprocess.Popen[bytes] | None = None
    prefix: str = ""  # Redis keys of this target, deleted at the end

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def modes(self) -> list[str]:
        if self.backend.startswith("floor") or self.backend == "direct":
            return ["floor"]
        return ["miss"] if self.backend == "off" else ["miss", "hit"]

    def start(self, upstream: str, args: argparse.Namespace, tmp: Path, src: Path | None) -> None:
        import yaml

        if self.backend == "direct":
            return  # the fake upstream itself, already running: what the core bench calls "direct"
        if self.backend.startswith("floor"):
            argv = [sys.executable, str(Path(__file__).resolve()), "--serve-floor", str(self.port),
                    "--floor-server", {"floor-aigw": "aigw", "floor-raw": "raw"}.get(self.backend, "uvicorn")]
        else:
            self.prefix = f"aigw-bench:{uuid.uuid4().hex[:8]}:"
            folder = tmp / self.name.replace("@", "-")
            folder.mkdir()
            path = folder / "aigw.yaml"
            path.write_text(yaml.safe_dump(gateway_config(args.config, self.backend, upstream, self.port,
                                                          args.redis_url, self.prefix, folder)))
            argv = [str(Path(sys.executable).with_name("aigw")), "serve", "--config", str(path), "--log-level",
                    "warning"]
        env = {**os.environ, "PYTHONPATH": str(src)} if src is not None else None  # --ref: that commit's src/
        self.proc = subprocess.Popen(pinned(1, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

    def ready(self) -> None:
        if self.backend == "direct":
            return
        if self.backend.startswith("floor"):
            wait_http(self.base + "/", method="POST")
            return
        wait_http(self.base + "/health/live")
        if self.backend != "off":
            warm_hits(self.base, "plain")  # plain and streamed requests share entries

    def stop(self, redis_url: str) -> None:
        if self.proc is not None and self.backend != "direct":  # the upstream is stopped by main
            stop(self.proc)
        if self.prefix and self.backend == "redis":
            import redis

            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i : i + 500])
            client.close()


def measure(target: Target, kind: str, mode: str, conc: int, args: argparse.Namespace) -> dict[str, Any]:
    busy = wait_quiet(args.quiet_max, args.quiet_wait)
    assert target.proc is not None
    cpu0 = cpu_s(target.proc.pid)
    expect = "" if target.modes == ["floor"] or target.backend == "off" else mode  # "" = no header to check
    r = run_wrk(target.base + "/v1/chat/completions", kind, mode, conc, args.duration, expect)
    r["cpu_us"] = (cpu_s(target.proc.pid) - cpu0) / max(1, r["requests"]) * 1e6
    r["busy"] = busy
    return r


def keep_best(rows: dict[tuple[str, str, str, int], dict[str, Any]], key: tuple[str, str, str, int],
              r: dict[str, Any]) -> None:
    """Across rounds: the lowest p50 / p99 / CPU and the highest req/s (the least disturbed), errors summed."""
    best = rows.get(key)
    if best is None:
        rows[key] = {"backend": key[0], "kind": key[1], "mode": key[2], "c": key[3], **r}
        return
    for name in ("p50", "p99", "cpu_us", "busy"):
        best[name] = min(best[name], r[name])
    best["rps"] = max(best["rps"], r["rps"])
    best["errors"] += r["errors"]
    best["requests"] += r["requests"]


def run_all(targets: list[Target], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every cell of every target, round by round (each round in a rotated order): all targets see the
    same spells of noise."""
    rows: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for kind in args.kinds:
        for conc in args.conc:
            for n in range(args.rounds):
                shift = n % len(targets)  # each round starts at another target: no one always goes first
                for target in targets[shift:] + targets[:shift]:
                    for mode in target.modes:
                        r = measure(target, kind, mode, conc, args)
                        keep_best(rows, (target.name, kind, mode, conc), r)
                        print(f"  round {n + 1}: {target.name:12} {kind:6} {mode:5} c={conc:<3} {r['rps']:7.0f} req/s"
                              f"  p50 {r['p50']:.2f} ms  CPU {r['cpu_us']:.0f} µs/req  errors {r['errors']}",
                              file=sys.stderr)
    order = {t.name: i for i, t in enumerate(targets)}
    return sorted(rows.values(), key=lambda x: (order[x["backend"]], args.kinds.index(x["kind"]),
                                                ["floor", "miss", "hit"].index(x["mode"]), x["c"]))


def export_ref(ref: str, tmp: Path) -> Path:
    """``git archive REF src`` into ``tmp``: the gateway of that commit (put first on PYTHONPATH)."""
    out = tmp / "ref"
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "src"], capture_output=True, check=True,
                             timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True, timeout=60)
    return out / "src"


# -- in process ------------------------------------------------------------------------------
async def in_process(n: int, config_name: str, rounds: int = 3) -> list[str]:
    """Gateway CPU per request with no network: the ASGI app called directly, 0 ms mock upstream.

    The three setups run interleaved ``rounds`` times; the best round is reported
    (the least disturbed by anything else on the machine).
    """
    import orjson

    from aigw.app import build_app
    from aigw.config.cache import CacheConfig
    from aigw.config.load import load_config

    headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {KEY}".encode())]

    async def call(app: Any, text: str) -> None:
        body = orjson.dumps({"model": "mock", "messages": [{"role": "user", "content": text}]})
        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
                 "raw_path": b"/v1/chat/completions", "headers": headers, "http_version": "1.1",
                 "scheme": "http", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "root_path": ""}
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            return None
        await app(scope, receive, send)
        await asyncio.sleep(0)  # let background work run, as a server's loop would between requests

    setups = {"cache off, miss": None, "memory, miss": "miss", "memory, hit": "hit"}
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for label, mode in setups.items():
                config = load_config()
                config.server.master_key = KEY
                config.database_url = f"sqlite:///{tmp}/in-process.db"
                if config_name == "bare":  # bare.yaml's switches, with the mock model
                    config.observability.metrics.enabled = False
                    config.observability.request_log.enabled = False
                    config.observability.tracing.enabled = False
                    config.observability.log_requests = False
                    config.tenancy.enabled = False
                if mode is not None:
                    config.cache = CacheConfig(mode="exact", max_entries=100_000)
                app = build_app(config)
                for hook in app.on_startup:
                    await hook()
                for i in range(200):
                    await call(app, f"warm {i % 8}")
                started = time.perf_counter()
                for i in range(n):
                    await call(app, f"warm {i % 8}" if mode == "hit" else f"fresh {r} {i}")
                took = (time.perf_counter() - started) / n * 1e6
                best[label] = min(best.get(label, took), took)
                for hook in reversed(app.on_shutdown):
                    await hook()
    return [f"| in process (no HTTP), 0 ms mock upstream, {config_name} config | µs per request (best of "
            f"{rounds}) |", "|---|---|", *(f"| {label} | {us:.0f} |" for label, us in best.items())]


# -- report ----------------------------------------------------------------------------------
def _find(rows: list[dict[str, Any]], backend: str, kind: str, mode: str, c: int) -> dict[str, Any] | None:
    return next((x for x in rows if x["backend"] == backend and x["kind"] == kind and x["mode"] == mode
                 and x["c"] == c), None)


def report(rows: list[dict[str, Any]]) -> str:
    out = ["| target | request | mode | conc | req/s | p50 ms | p99 ms | CPU µs/req | errors | busy before |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mode = f"**{r['mode']}**" if r["mode"] == "hit" else r["mode"]
        out.append(f"| {r['backend']} | {r['kind']} | {mode} | {r['c']} | {r['rps']:.0f} | {r['p50']:.2f} "
                   f"| {r['p99']:.2f} | {r['cpu_us']:.0f} | {r['errors']} | {r['busy']:.0f}% |")
    return "\n".join(out)


def summary(rows: list[dict[str, Any]], conc: list[int], suffix: str = "") -> str:
    """Hit against the core bench's miss (``off``) and against the same backend's miss; floor beside."""
    lo, hi = min(conc), max(conc)
    out = [f"| backend | request | p50 c={lo}: miss (off) / hit / floor | x | added p50 c={lo} (over direct): "
           f"miss / hit | req/s c={hi}: miss (off) / hit / floor | x | CPU µs/req c={hi}: miss (off) / hit / floor "
           "| x | x vs same backend's miss (p50 / req/s / CPU) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for backend in ("memory", "redis"):
        name = backend + suffix
        for kind in ("plain", "stream"):
            h1, hh = _find(rows, name, kind, "hit", lo), _find(rows, name, kind, "hit", hi)
            m1, mh = _find(rows, "off" + suffix, kind, "miss", lo), _find(rows, "off" + suffix, kind, "miss", hi)
            s1, sh = _find(rows, name, kind, "miss", lo), _find(rows, name, kind, "miss", hi)
            f1, fh = _find(rows, "floor", kind, "floor", lo), _find(rows, "floor", kind, "floor", hi)
            if h1 is None or hh is None:
                continue

            def cell(miss: dict[str, Any] | None, hit: dict[str, Any], floor: dict[str, Any] | None,
                     key: str, fmt: str, higher_better: bool = False) -> tuple[str, str]:
                text = " / ".join(fmt.format(x[key]) if x is not None else "-" for x in (miss, hit, floor))
                if miss is None:
                    return text, "-"
                ratio = hit[key] / miss[key] if higher_better else miss[key] / max(1e-9, hit[key])
                return text, f"**{ratio:.1f}x**" if ratio >= 5 else f"{ratio:.1f}x"

            p50, p50x = cell(m1, h1, f1, "p50", "{:.2f}")
            added = _added(m1, h1, _find(rows, "direct", kind, "floor", lo))
            rps, rpsx = cell(mh, hh, fh, "rps", "{:.0f}", higher_better=True)
            cpu, cpux = cell(mh, hh, fh, "cpu_us", "{:.0f}")
            same = "-"
            if s1 is not None and sh is not None:
                same = (f"{s1['p50'] / max(1e-9, h1['p50']):.1f}x / {hh['rps'] / sh['rps']:.1f}x / "
                        f"{sh['cpu_us'] / max(1e-9, hh['cpu_us']):.1f}x")
            out.append(f"| {name} | {kind} | {p50} | {p50x} | {added} | {rps} | {rpsx} | {cpu} | {cpux} | {same} |")
    return "\n".join(out + _ceiling(rows, lo, hi, suffix))


def _added(miss: dict[str, Any] | None, hit: dict[str, Any], direct: dict[str, Any] | None) -> str:
    """p50 over a direct call to the upstream, as the core bench reads latency: miss / hit (x)."""
    if miss is None or direct is None:
        return "-"
    m, h = miss["p50"] - direct["p50"], hit["p50"] - direct["p50"]
    ratio = f"{m / h:.1f}x" if h > 0.005 else "over 50x"  # wrk's p50 has 10 µs steps: below that, no ratio
    return f"+{m:.2f} / +{max(0.0, h):.2f} ms ({ratio})"


def _ceiling(rows: list[dict[str, Any]], lo: int, hi: int, suffix: str) -> list[str]:
    """The miss against each floor: how many times faster than a miss an answer can be at all, on
    that server (no hit can beat a server that answers without any gateway code)."""
    out = ["", f"| ceiling: miss (off) / floor | request | p50 c={lo} | req/s c={hi} | CPU µs/req c={hi} |",
           "|---|---|---|---|---|"]
    for floor in ("floor-raw", "floor-aigw", "floor"):
        for kind in ("plain", "stream"):
            m1, mh = _find(rows, "off" + suffix, kind, "miss", lo), _find(rows, "off" + suffix, kind, "miss", hi)
            f1, fh = _find(rows, floor, kind, "floor", lo), _find(rows, floor, kind, "floor", hi)
            if None in (m1, mh, f1, fh):
                continue
            assert m1 is not None and mh is not None and f1 is not None and fh is not None
            out.append(f"| {floor} | {kind} | {m1['p50'] / max(1e-9, f1['p50']):.1f}x | "
                       f"{fh['rps'] / max(1e-9, mh['rps']):.1f}x | {mh['cpu_us'] / max(1e-9, fh['cpu_us']):.1f}x |")
    return out if len(out) > 3 else []


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=3)
    ap.add_argument("--config", default="bare", help="bare (bench/configs/bare.yaml), default (the gateway's "
                    "defaults: metrics, request log, tenancy) or a bench config file")
    ap.add_argument("--conc", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    ap.add_argument("--backends", default="off,memory,redis")
    ap.add_argument("--kinds", type=lambda s: s.split(","), default=["plain", "stream"])
    ap.add_argument("--no-floor", action="store_true", help="skip the raw uvicorn hello-world floor")
    ap.add_argument("--rounds", type=int, default=1, help="rounds over every cell; the least disturbed figures "
                    "of each cell are kept")
    ap.add_argument("--ref", help="also run every backend from this commit's src/ (git archive), as NAME@REF")
    ap.add_argument("--redis-url", default=os.environ.get("AIGW_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--in-process", type=int, default=0, help="requests per in-process run (0 = skip)")
    ap.add_argument("--quiet-max", type=float, default=20, help="wait for machine CPU busy <= this %% ...")
    ap.add_argument("--quiet-wait", type=float, default=15, help="... for at most this many seconds per run")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--floor-server", default="uvicorn", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_floor:
        serve_floor(args.serve_floor, args.floor_server)
        return 0
    if args.in_process:
        print("\n".join(asyncio.run(in_process(args.in_process, args.config))) + "\n")
    if not UPSTREAM.exists() or not shutil.which("wrk"):
        print(f"needs {UPSTREAM} and wrk on PATH", file=sys.stderr)
        return 2
    backends = args.backends.split(",")
    up_port = free_port()
    upstream = subprocess.Popen(pinned(0, [sys.executable, str(UPSTREAM), "--port", str(up_port)]),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    targets = [Target("direct", "direct", up_port, upstream)]  # the core bench's "added latency" is over this
    if not args.no_floor:
        targets += [Target("floor", "floor", free_port()), Target("floor-aigw", "floor-aigw", free_port()),
                    Target("floor-raw", "floor-raw", free_port())]
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder)
            sources: list[tuple[str, Path | None]] = [("", None)]
            if args.ref:
                sources.append((f"@{args.ref}", export_ref(args.ref, tmp)))
            for suffix, _ in sources:
                targets += [Target(b + suffix, b, free_port()) for b in backends]
            wait_http(f"http://127.0.0.1:{up_port}/health")
            src_of = dict(sources)
            for target in targets:  # all at once: an idle server costs nothing, and rounds can interleave
                target.start(f"http://127.0.0.1:{up_port}/v1", args, tmp,
                             src_of.get(target.name[len(target.backend):]))
            for target in targets:
                target.ready()
            rows = run_all(targets, args)
    finally:
        for target in targets:
            target.stop(args.redis_url)
        stop(upstream)
    if args.json:
        Path(args.json).write_text(json.dumps({"config": args.config, "duration": args.duration,
                                               "rounds": args.rounds, "ref": args.ref, "rows": rows}, indent=1))
    ref = f", --ref {args.ref}" if args.ref else ""
    print(f"config: {args.config}, {args.duration:g} s per run, best of {args.rounds} round(s){ref}\n")
    print(report(rows) + "\n")
    print(summary(rows, args.conc))
    if args.ref:
        print(f"\nfrom {args.ref}:\n")
        print(summary(rows, args.conc, f"@{args.ref}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
