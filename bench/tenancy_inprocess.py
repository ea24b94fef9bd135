#!/usr/bin/env python3
"""Tenancy's own CPU per request, in process: the ASGI app called directly, no HTTP, no upstream.

    .venv/bin/python bench/tenancy_inprocess.py [--requests 4000] [--rounds 5] [--conc 16] [--redis URL]
        [--without PART,PART...]

Two apps from the same config but for ``tenancy.enabled`` (a virtual key whose key,
project and tenant all carry rpm, tpm, max-parallel and a budget, so every check
runs at all three levels and none refuses; the spend ledger writes to a throwaway
SQLite file), both answered by the ``mock`` provider in 0 ms, both with the GC
tuning ``aigw serve`` applies. Requests go in batches of ``--conc`` at once;
rounds alternate the two apps and the best round counts. The figure is process
CPU time per request (``time.process_time`` plus the CPU of child processes, i.e. the
SQLite writer processes of ``aigw.sqlite_process``): what the server's HTTP layer and a
real upstream add is the same for both, so the difference is what tenancy costs.
Much steadier on a busy machine than a load test, which is why it is the tool
for A/B-ing changes to the limits, budget and accounting path. ``--without accounting,limits+budget``
adds one tenancy app per part, built with those stages' ``build`` patched to "off", in the same alternating
rounds: ``tenancy`` minus it is what they cost (parts share work, e.g. ``measure``, so shares overlap). Loopback only
(``--redis``: this run's own key prefix, deleted afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import os
import tempfile
import time
import uuid
from typing import Any

import orjson

from aigw.app import build_app
from aigw.config.models import GatewayConfig
from aigw.gc_tuning import tune_gc

MASTER = "sk-master-inprocess"
BODY = orjson.dumps({"model": "bench-model", "messages": [{"role": "user", "content": "Say hello, bench."}],
                     "max_tokens": 32})
BIG = {"rpm": 100_000_000, "tpm": 2_000_000_000, "max_parallel": 100_000, "budget_usd": 1e9,
       "budget_period": "total"}


def config(tenancy: bool, db: str, redis_url: str, prefix: str) -> Any:
    raw: dict[str, Any] = {
        "server": {"master_key": MASTER},
        "database_url": f"sqlite:///{db}",
        "models": [{"name": "bench-model", "provider": "mock", "model": "mock-1",
                    "prices": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}],
        "observability": {"metrics": {"enabled": False}, "request_log": {"enabled": False},
                          "tracing": {"enabled": False}, "log_requests": False},
        "tenancy": {"enabled": tenancy},
    }
    if redis_url and tenancy:
        raw.update(redis_url=redis_url, redis_prefix=prefix)
    return GatewayConfig.model_validate(raw)


async def call(app: Any, method: str, path: str, key: str, body: bytes) -> tuple[int, bytes]:
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"authorization", f"Bearer {key}".encode()),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 4000), "scheme": "http",
             "http_version": "1.1", "asgi": {"version": "3.0"}}
    sent = False
    status = 0
    out: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            out.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(out)


async def lifespan(app: Any, kind: str) -> None:
    done = asyncio.get_running_loop().create_future()
    messages = [{"type": f"lifespan.{kind}"}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)
        return {}

    async def send(message: dict[str, Any]) -> None:
        if not done.done():
            done.set_result(message)

    task = asyncio.create_task(app({"type": "lifespan"}, receive, send))
    msg = await asyncio.wait_for(done, 30)
    if not msg["type"].endswith("complete"):
        raise SystemExit(f"lifespan {kind}: {msg}")
    if kind == "shutdown":
        await asyncio.wait_for(task, 30)


async def virtual_key(app: Any) -> str:
    for path, body in (("/admin/tenants", {"name": "bench-tenant", **BIG}),
                       ("/admin/projects", {"name": "bench-project", "tenant": "bench-tenant", **BIG})):
        status, out = await call(app, "POST", path, MASTER, orjson.dumps(body))
        assert status in (200, 201), out
    status, out = await call(app, "POST", "/admin/keys", MASTER,
                             orjson.dumps({"project": "bench-project", "name": "bench", **BIG}))
    assert status in (200, 201), out
    return str(orjson.loads(out)["key"])


async def round_(app: Any, key: str, n: int, conc: int) -> float:
    t0 = cpu_s()
    for _ in range(n // conc):
        results = await asyncio.gather(*(call(app, "POST", "/v1/chat/completions", key, BODY) for _ in range(conc)))
        for status, out in results:
            if status != 200:
                raise SystemExit(f"request failed: {status} {out[:300]!r}")
    return (cpu_s() - t0) / (n // conc * conc) * 1e6


def cpu_s() -> float:
    """This process's CPU time plus its live children's (the ledger's writer processes)."""
    total = time.process_time()
    try:
        with open(f"/proc/self/task/{os.getpid()}/children") as f:
            children = f.read().split()
    except OSError:
        return total
    tick = os.sysconf("SC_CLK_TCK")
    for pid in children:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def built_without(parts: str, cfg: Any) -> Any:
    """The app of ``cfg`` with the stages named in ``parts`` ("+"-joined) left out (bench-only patching)."""
    modules = [importlib.import_module(f"aigw.pipeline.stages.{name}") for name in parts.split("+") if name]
    saved = [m.build for m in modules]
    try:
        for m in modules:
            m.build = lambda deps: None
        return build_app(cfg)
    finally:
        for m, build in zip(modules, saved, strict=True):
            m.build = build


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--conc", type=int, default=16)
    ap.add_argument("--redis", default="", help="redis URL: tenancy's counters in Redis instead of memory")
    ap.add_argument("--only", default="", help="run just this app (bare, tenancy or -PART) for --requests requests "
                    "after 320 to warm up, and print nothing: what bench/tenancy_instructions.sh counts")
    ap.add_argument("--without", default="", help="comma-separated parts, each a stage name or several joined by "
                    "'+': one more tenancy app per part, built without those stages (what they cost)")
    args = ap.parse_args()
    prefix = f"aigw-inproc-{uuid.uuid4().hex[:8]}:"
    names = [args.only] if args.only else ["bare", "tenancy", *(f"-{p}" for p in args.without.split(",") if p)]
    with tempfile.TemporaryDirectory() as tmp:
        apps: dict[str, tuple[Any, str]] = {}
        for name in names:
            cfg = config(name != "bare", os.path.join(tmp, f"{name}.db"), args.redis, prefix)
            app = built_without(name[1:], cfg) if name.startswith("-") else build_app(cfg)
            await lifespan(app, "startup")
            apps[name] = (app, await virtual_key(app) if name != "bare" else MASTER)
        tune_gc(20_000)
        if args.only:
            app, key = apps[args.only]
            await round_(app, key, 320, args.conc)
            await round_(app, key, args.requests, args.conc)
            await lifespan(app, "shutdown")
            return
        best: dict[str, float] = {}
        for app, key in apps.values():  # warm-up
            await round_(app, key, min(1000, args.requests), args.conc)
        for _ in range(args.rounds):
            for name, (app, key) in apps.items():
                us = await round_(app, key, args.requests, args.conc)
                best[name] = min(best.get(name, us), us)
        gc.unfreeze()
        for app, _ in apps.values():
            await lifespan(app, "shutdown")
        if args.redis:
            import redis.asyncio as aioredis

            r = aioredis.Redis.from_url(args.redis)
            keys = [k async for k in r.scan_iter(match=prefix + "*", count=1000)]
            if keys:
                await r.delete(*keys)
            await r.aclose()
    base, full = best["bare"], best["tenancy"]
    for name, us in best.items():
        parts = f"   {full - us:+6.1f} vs tenancy" if name.startswith("-") else ""
        print(f"{name:28s} {us:8.1f} µs CPU/request (best of {args.rounds})   +{us - base:6.1f} µs{parts}")

if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
