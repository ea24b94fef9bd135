#!/usr/bin/env python3
"""A worker's call to the shared cache its `aigw serve --workers N` parent keeps (stores/cache_host.py): what a
question one worker answered costs another worker that has no copy of it yet.

    .venv/bin/python bench/cache_hosted.py [--calls 2000] [--size 400]

Both sides in this one process (the host on its thread, the client on the main loop), so the wall time per call
is an upper bound of what a worker waits (the two share one GIL here, not in the gateway) and the CPU figure is
both sides' together. Loopback only: a Unix socket in a private temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aigw.stores.cache_hosted import HostedCache
from aigw.stores.counter_host import CounterHost


async def measure(path: str, calls: int, size: int) -> None:
    cache = HostedCache(path)
    await cache.set("t1:k", b"x" * size, 60)
    for _ in range(100):
        await cache.get("t1:k")
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        assert await cache.get("t1:k") is not None
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"get of a {size}-byte entry: {wall / calls * 1e6:.1f} µs wall, {cpu / calls * 1e6:.1f} µs CPU "
          f"(both sides), {calls} calls one after another")
    await cache.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--size", type=int, default=400)
    args = ap.parse_args()
    host = CounterHost(60.0, (10_000, 64 * 1024 * 1024, 8))
    host.start()
    try:
        asyncio.run(measure(host.path, args.calls, args.size))
    finally:
        host.stop()


if __name__ == "__main__":
    main()
