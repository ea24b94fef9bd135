#!/usr/bin/env python3
"""A request through aigw's own HTTP/1 connection code and the app, in process, with a stand-in transport.

    .venv/bin/python bench/server_inprocess.py [hit|miss|floor] [--batches 2000] [--rounds 5]

Sixteen ``Connection`` objects get one request each per batch (the bytes a wrk client sends, handed over by a
loop callback as a socket's read is: since session 25, before which they came from within the batch's task), the app
answers (``hit``: exact cache in memory, the question asked before; ``miss``: a new question to the in-process
``mock`` provider; ``floor``: ``cache_bench``'s fixed-answer app), and the transport's ``write`` takes the
answer. No sockets and no system calls, so the figure is the server's and the gateway's own user CPU per
request (``time.process_time``, best round), with the GC tuning ``aigw serve`` applies: steady enough to A/B a
change of a few hundred nanoseconds on the hit path, which a load test cannot see. Over loopback the same hit
costs this plus the kernel's read and write (``bench/cache_bench.py`` measures that).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from aigw.app import build_app
from aigw.config.cache import CacheConfig
from aigw.config.load import load_config
from aigw.gc_tuning import tune_gc
from aigw.http.http1_connection import Connection
from aigw.http.http1_state import ServerState

KEY = "sk-bench-master"
HERE = str(Path(__file__).resolve().parent)
CONNECTIONS = 16


class Transport(asyncio.Transport):
    """Takes the answer's bytes and wakes the batch waiting for them."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: asyncio.Future[bytes] | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 4000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(bytes(data))

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


def request(question: str) -> bytes:
    body = b'{"model":"mock","messages":[{"role":"user","content":"%b"}]}' % question.encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:4000\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer %b\r\nContent-Length: %d\r\n\r\n%b" % (KEY.encode(), len(body), body))


def gateway(tmp: str, cached: bool) -> Any:
    """bench/configs/bare.yaml's switches (no metrics, request log, tracing or tenancy), the mock model."""
    config = load_config()
    config.server.master_key = KEY
    config.database_url = f"sqlite:///{tmp}/server-inprocess.db"
    config.observability.metrics.enabled = False
    config.observability.request_log.enabled = False
    config.observability.tracing.enabled = False
    config.observability.log_requests = False
    config.tenancy.enabled = False
    if cached:
        config.cache = CacheConfig(mode="exact", max_entries=100_000)
    return build_app(config)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", nargs="?", default="hit", choices=["hit", "miss", "floor"])
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as tmp:
        app = gateway(tmp, cached=args.mode == "hit")
        for hook in app.on_startup:
            await hook()
        if args.mode == "floor":
            sys.path.insert(0, HERE)
            from cache_bench import floor_app
            state = ServerState(floor_app, 60)
        else:
            state = ServerState(app, 60)
        conns = []
        for _ in range(CONNECTIONS):
            conn, transport = Connection(state, loop), Transport()
            conn.connection_made(transport)
            conns.append((conn, transport))
        pool = [request(f"cached question {i}") for i in range(64)]

        async def batch(k: int, fresh: bool) -> None:
            waits = []
            for j, (conn, transport) in enumerate(conns):
                transport.answered = loop.create_future()
                waits.append(transport.answered)
                # from the loop, as a socket's read is (not from within this task)
                sent = request(f"fresh {k} {j}") if fresh else pool[(k * CONNECTIONS + j) % 64]
                loop.call_soon(conn.data_received, sent)
            for answered in waits:
                if (await answered).find(b" 200 OK", 0, 20) < 0:  # not ``in``: it raises inside (~2k instructions)
                    raise SystemExit(f"not a 200: {answered.result()[:300]!r}")

        for k in range(40):  # the pool's answers into the cache
            await batch(k, False)
        tune_gc(20_000)
        best = float("inf")
        for r in range(args.rounds):
            started = time.process_time()
            for k in range(args.batches):
                await batch(r * args.batches + k, args.mode == "miss")
            best = min(best, (time.process_time() - started) / (args.batches * CONNECTIONS) * 1e6)
        print(f"{args.mode}: {best:.2f} µs of CPU a request (best of {args.rounds} rounds of "
              f"{args.batches * CONNECTIONS})")
        for hook in reversed(app.on_shutdown):
            await hook()


if __name__ == "__main__":
    uvloop.run(main())
