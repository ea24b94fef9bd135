#!/usr/bin/env python3
"""Per-request CPU of the gateway in process, observability off vs on, without HTTP or sockets.

  PYTHONPATH=. .venv/bin/python bench/observability_inprocess.py [--chunk 1000] [--rounds 15]

One app per variant (mock provider, master key, default pipeline), all built up front;
rounds interleave the variants in chunks of ``--chunk`` ASGI calls, and the *minimum*
chunk average per variant is reported (the run least disturbed by other work on the
box), with the median beside it. What it leaves out (uvicorn's HTTP parsing, the upstream
HTTP call) costs the same in every variant, so the differences are the observability cost
itself; divide them by the end-to-end CPU per request (observability_bench.py) for a
percentage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Any

import orjson

from aigw.app import build_app
from aigw.observability.logging import configure
from tests.support.gateway import make_config

VARIANTS: dict[str, dict[str, Any]] = {
    "off": {"metrics": {"enabled": False}, "log_requests": False, "request_log": {"enabled": False}},
    "metrics": {"log_requests": False, "request_log": {"enabled": False}},
    "metrics+json_log": {"request_log": {"enabled": False}},
    "metrics+json_log+request_log": {},
    "+tracing_no_stage_spans": {"tracing": {"enabled": True, "exporter": "none", "stage_spans": False}},
    "+tracing": {"tracing": {"enabled": True, "exporter": "none"}},
}
BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hello there"}]})
SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
         "headers": [(b"content-type", b"application/json"), (b"authorization", b"Bearer sk-bench-key-123")]}


async def call(app: Any) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(SCOPE, receive, send)
    if sent[0]["status"] != 200:
        raise RuntimeError(sent)


async def main(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="aigw-obs-inproc-")
    apps = {}
    for name, obs in VARIANTS.items():
        cfg = make_config({"server": {"master_key": "sk-bench-key-123"}, "database_url": f"sqlite:///{tmp}/{name}.db",
                           "models": [{"name": "m", "provider": "mock"}], "observability": obs})
        app = build_app(cfg)
        for hook in app.on_startup:
            await hook()
        for _ in range(300):
            await call(app)
        apps[name] = app
    per: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(args.rounds):
        for name, app in apps.items():
            await asyncio.sleep(0.05)  # the previous variant's writer finishes its batch outside our window
            start = time.process_time()
            for _ in range(args.chunk):
                await call(app)
                await asyncio.sleep(0)  # let background tasks (the request log's writer) run as they would
            per[name].append((time.process_time() - start) / args.chunk * 1e6)
    for app in apps.values():
        for hook in reversed(app.on_shutdown):
            await hook()
    base = min(per["off"])
    print("| variant | CPU µs / request (min) | median | added to off (min) |")
    print("| --- | --- | --- | --- |")
    for name, values in per.items():
        print(f"| {name} | {min(values):.1f} | {statistics.median(values):.1f} | {min(values) - base:+.1f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=15)
    configure("info", "json", stream=open(os.devnull, "w"))  # noqa: SIM115 - for the whole run
    asyncio.run(main(ap.parse_args()))
