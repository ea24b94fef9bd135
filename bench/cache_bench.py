#!/usr/bin/env python3
"""Response cache: hit vs miss latency and req/s, memory and Redis backends.

  .venv/bin/python bench/cache_bench.py [--duration 5] [--backends off,memory,redis] [--md]

Everything on loopback, every wait bounded. The shared fake upstream
(../shared/bench/upstream.py, 0 ms delay) stands behind an ``openai_compatible``
deployment, as in issue 2's bench; aigw runs as its own process (``aigw serve``,
one worker) pinned to CPU 1, the upstream and the load driver to CPU 0.

Per backend (``off`` = no cache block: the plain miss baseline):
  miss    every request a new question (looked up, sent upstream, stored)
  hit     a pool of 64 questions asked before the timed run, then repeated
for non-streaming requests with wrk (C, HdrHistogram percentiles; a Lua script
makes each miss unique) and for streams with a small aiohttp driver that reads
each stream to its end. A response whose ``x-aigw-cache`` header is not the
expected one counts as an error. Before each run it waits (bounded) for the
machine to be quiet and reports how busy it was. Also: gateway CPU per request
in process (no HTTP). Started processes are stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
UPSTREAM = REPO.parent / "shared" / "bench" / "upstream.py"
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
  local body = '{"model":"bench-model","messages":[{"role":"user","content":"' .. q .. '"}]}'
  return wrk.format("POST", "/v1/chat/completions",
                    {["content-type"] = "application/json", ["authorization"] = "Bearer %(key)s"}, body)
end
function response(status, headers, body)
  if status ~= 200 or ("%(expect)s" ~= "" and headers["x-aigw-cache"] ~= "%(expect)s") then bad = bad + 1 end
end
function done(summary, latency, requests)
  local errs = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout
  for _, t in ipairs(threads) do errs = errs + (tonumber(t:get("bad")) or 0) end
  io.write(string.format('WRKJSON {"requests": %%d, "seconds": %%f, "p50": %%f, "p99": %%f, "errors": %%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000, errs))
end
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else argv


def wait_http(url: str, timeout_s: float = 20) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


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


def gateway_config(backend: str, upstream: str, port: int, redis_url: str, prefix: str, db: Path) -> dict[str, Any]:
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "master_key": KEY},
        "database_url": f"sqlite:///{db}",  # the ledger and request log of this run, thrown away after
        "models": [{"name": "bench-model", "provider": "openai_compatible", "model": "bench-model",
                    "api_base": upstream, "api_key": "sk-fake"}],
    }
    if backend != "off":
        config["cache"] = {"mode": "exact", "backend": backend, "ttl_s": 3600, "max_entries": 100_000}
    if backend == "redis":
        config.update(redis_url=redis_url, redis_prefix=prefix)
    return config


def run_wrk(url: str, mode: str, conc: int, duration: float, expect: str) -> dict[str, Any]:
    script = WRK_LUA % {"mode": mode, "pool": POOL, "run": uuid.uuid4().hex[:8], "key": KEY, "expect": expect}
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


async def stream_load(base: str, mode: str, conc: int, duration: float, expect: str) -> dict[str, Any]:
    """Streams read to their end; latency = whole stream. Bounded by ``duration``."""
    latencies: list[float] = []
    errors = 0
    run = uuid.uuid4().hex[:8]
    headers = {"authorization": f"Bearer {KEY}"}
    deadline = 0.0  # set once the pool is warm

    async def worker(w: int, session: aiohttp.ClientSession) -> None:
        nonlocal errors
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            q = f"cached stream {n % POOL}" if mode == "hit" else f"fresh stream {run} {w} {n}"
            body = {"model": "bench-model", "stream": True, "messages": [{"role": "user", "content": q}]}
            start = time.perf_counter()
            async with session.post(base + "/chat/completions", json=body, headers=headers) as r:
                data = await r.read()
                header = r.headers.get("x-aigw-cache")
                ok = r.status == 200 and (not expect or header == expect) and data.endswith(b"[DONE]\n\n")
            latencies.append(time.perf_counter() - start)
            errors += 0 if ok else 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as session:
        if mode == "hit":  # warm the pool
            for i in range(POOL):
                async with session.post(base + "/chat/completions", headers=headers, json={
                        "model": "bench-model", "stream": True,
                        "messages": [{"role": "user", "content": f"cached stream {i}"}]}) as r:
                    await r.read()
            await asyncio.sleep(0.2)
        started = time.perf_counter()
        deadline = started + duration
        await asyncio.gather(*(worker(w, session) for w in range(conc)))
        took = time.perf_counter() - started
    latencies.sort()
    if not latencies:
        raise RuntimeError("no stream finished within the run")
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return {"rps": len(latencies) / took, "p50": pick(0.5), "p99": pick(0.99), "errors": errors,
            "requests": len(latencies)}


def warm_hits(base: str) -> None:
    import urllib.request

    for i in range(POOL):
        body = json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": f"cached question {i}"}]})
        req = urllib.request.Request(base + "/chat/completions", body.encode(),
                                     {"content-type": "application/json", "authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
    time.sleep(0.2)


def bench_backend(backend: str, upstream: str, args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    import yaml

    port = free_port()
    prefix = f"aigw-bench:{uuid.uuid4().hex[:8]}:"
    path = tmp / f"{backend}.yaml"
    config = gateway_config(backend, upstream, port, args.redis_url, prefix, tmp / f"{backend}.db")
    path.write_text(yaml.safe_dump(config))
    aigw = str(Path(sys.executable).with_name("aigw"))
    proc = subprocess.Popen(pinned(1, [aigw, "serve", "--config", str(path), "--log-level", "warning"]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows: list[dict[str, Any]] = []
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/health/live")
        modes = ["miss"] if backend == "off" else ["miss", "hit"]
        expect = {"miss": "miss" if backend != "off" else "", "hit": "hit"}  # "" = no header to check
        for mode in modes:
            if mode == "hit":
                warm_hits(base + "/v1")
            for conc in args.conc:
                busy = wait_quiet(args.quiet_max, args.quiet_wait)
                cpu0 = cpu_s(proc.pid)
                r = run_wrk(base + "/v1/chat/completions", mode, conc, args.duration, expect[mode])
                r["cpu_us"] = (cpu_s(proc.pid) - cpu0) / max(1, r["requests"]) * 1e6
                rows.append({"backend": backend, "kind": "plain", "mode": mode, "c": conc, "busy": busy, **r})
                busy = wait_quiet(args.quiet_max, args.quiet_wait)
                cpu0 = cpu_s(proc.pid)
                r = asyncio.run(stream_load(base + "/v1", mode, conc, args.duration, expect[mode]))
                r["cpu_us"] = (cpu_s(proc.pid) - cpu0) / max(1, r["requests"]) * 1e6
                rows.append({"backend": backend, "kind": "stream", "mode": mode, "c": conc, "busy": busy, **r})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if backend == "redis":
            import redis

            client = redis.Redis.from_url(args.redis_url)
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i : i + 500])
            client.close()
    return rows


async def in_process(n: int, rounds: int = 3) -> list[str]:
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
    for r in range(rounds):
        for label, mode in setups.items():
            config = load_config()
            config.server.master_key = KEY
            config.database_url = f"sqlite:///{tempfile.gettempdir()}/aigw-cache-bench-{os.getpid()}.db"
            if mode is not None:
                config.cache = CacheConfig(mode="exact", max_entries=100_000)
            app = build_app(config)
            for i in range(200):
                await call(app, f"warm {i % 8}")
            started = time.perf_counter()
            for i in range(n):
                await call(app, f"warm {i % 8}" if mode == "hit" else f"fresh {r} {i}")
            took = (time.perf_counter() - started) / n * 1e6
            best[label] = min(best.get(label, took), took)
            await app.state["supervisor"].drain()
    return ["| in process (no HTTP), 0 ms mock upstream | µs per request (best of rounds) |", "|---|---|",
            *(f"| {label} | {us:.0f} |" for label, us in best.items())]


def report(rows: list[dict[str, Any]]) -> str:
    out = ["| backend | request | mode | conc | req/s | p50 ms | p99 ms | gateway CPU µs/req | errors | busy before "
           "| hit vs miss: p50 / req/s / CPU |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = ""
        if r["mode"] == "hit":
            miss = next(x for x in rows if x["backend"] == r["backend"] and x["kind"] == r["kind"]
                        and x["mode"] == "miss" and x["c"] == r["c"])
            ratio = (f"{miss['p50'] / r['p50']:.1f}x / {r['rps'] / miss['rps']:.1f}x / "
                     f"{miss['cpu_us'] / max(1.0, r['cpu_us']):.1f}x")
        out.append(f"| {r['backend']} | {r['kind']} | {r['mode']} | {r['c']} | {r['rps']:.0f} | {r['p50']:.2f} "
                   f"| {r['p99']:.2f} | {r['cpu_us']:.0f} | {r['errors']} | {r['busy']:.0f}% | {ratio} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--conc", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    ap.add_argument("--backends", default="off,memory,redis")
    ap.add_argument("--redis-url", default=os.environ.get("AIGW_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--in-process", type=int, default=5000, help="requests per in-process run (0 = skip)")
    ap.add_argument("--quiet-max", type=float, default=20, help="wait for machine CPU busy <= this %% ...")
    ap.add_argument("--quiet-wait", type=float, default=60, help="... for at most this many seconds per run")
    args = ap.parse_args()
    if args.in_process:
        print("\n".join(asyncio.run(in_process(args.in_process))) + "\n")
    if not UPSTREAM.exists() or not shutil.which("wrk"):
        print(f"needs {UPSTREAM} and wrk on PATH", file=sys.stderr)
        return 2
    up_port = free_port()
    upstream = subprocess.Popen(pinned(0, [sys.executable, str(UPSTREAM), "--port", str(up_port)]),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows: list[dict[str, Any]] = []
    try:
        wait_http(f"http://127.0.0.1:{up_port}/health")
        with tempfile.TemporaryDirectory() as tmp:
            for backend in args.backends.split(","):
                rows += bench_backend(backend, f"http://127.0.0.1:{up_port}/v1", args, Path(tmp))
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
