"""What the router adds per call: Router.complete / open_stream against calling the provider directly.

    .venv/bin/python bench/router_overhead.py                # 20000 calls a case, best of 5 rounds
    .venv/bin/python bench/router_overhead.py --calls 50000 --repeat 7
    git show a899305:src/aigw/routing/router.py > /tmp/core_router.py   # the core issue's router
    .venv/bin/python bench/router_overhead.py --baseline /tmp/core_router.py  # ... measured alongside

The provider is an in-process stub that returns a prebuilt answer, so the figures are the
router's own work (choosing, breaker and statistics bookkeeping, timeouts, the primed stream
wrapper) with no network. Sequential calls on one event loop (uvloop when installed).
Figures go to docs/routing.md.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aigw.config.models import CircuitBreakerConfig, Deployment, ModelRouting
from aigw.providers.base import CallOptions
from aigw.routing.router import Router, RouteRequest, Target

ANSWER = {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
CHUNK = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "x"}}]}
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
CHUNKS = 20


class Stub:
    kind = "stub"
    upstream_model = "stub"

    async def chat(self, body: Any, call: CallOptions) -> Any:
        return ANSWER

    async def stream_chat(self, body: Any, call: CallOptions) -> AsyncIterator[Any]:
        for _ in range(CHUNKS):
            yield CHUNK

    async def aclose(self) -> None:
        return None


def router(n: int, strategy: str = "weighted", breaker: bool = True, retries: int = 2) -> Router:
    targets = []
    for i in range(n):
        d = Deployment(name="m", provider="mock", id=f"m#{i}", rpm=None)
        targets.append(Target(d, Stub()))
    rules = {"m": ModelRouting(strategy=strategy, num_retries=retries)}  # type: ignore[arg-type]
    return Router(targets, routing=rules, breaker=CircuitBreakerConfig(enabled=breaker))


async def timed(calls: int, one: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        await one()
    return (time.perf_counter_ns() - start) / calls / 1000  # µs a call


Case = tuple[str, int, Callable[[], Awaitable[None]], str]  # label, calls, one call, what it is measured against


def via(r: Any, req: Any) -> Callable[[], Awaitable[None]]:
    async def one() -> None:
        await r.complete(req)
    return one


def via_stream(r: Any, req: Any) -> Callable[[], Awaitable[None]]:
    async def one() -> None:
        chunks, _ = await r.open_stream(req)
        async for _ in chunks:
            pass
    return one


def load_baseline(path: str) -> Any:
    """Another router module (e.g. an older router.py) with the same Router/Target/RouteRequest names."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("baseline_router", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_router"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def cases(calls: int, baseline: str | None) -> list[Case]:
    stub, call = Stub(), CallOptions()
    req = RouteRequest(model="m", body=BODY)

    async def direct() -> None:
        await stub.chat(BODY, call)

    async def direct_stream() -> None:
        async for _ in stub.stream_chat(BODY, call):
            pass

    out: list[Case] = [
        ("provider called directly", calls, direct, ""),
        ("router, 1 deployment, no retries, breaker off", calls, via(router(1, breaker=False, retries=0), req), "d"),
        ("router, 1 deployment, defaults (2 retries, breaker on)", calls, via(router(1), req), "d"),
        *[(f"router, 3 deployments, {s}", calls, via(router(3, s), req), "d")
          for s in ("weighted", "least_inflight", "lowest_latency", "lowest_cost", "most_quota")],
        (f"stream of {CHUNKS} chunks, directly", calls // 4, direct_stream, ""),
        ("stream via router, 1 deployment", calls // 4, via_stream(router(1), req), "s"),
        ("stream via router, 3 deployments", calls // 4, via_stream(router(3), req), "s"),
    ]
    if baseline:
        old = load_baseline(baseline)
        r = old.Router([old.Target(Deployment(name="m", provider="mock", id="m#0"), Stub())])
        old_req = old.RouteRequest(model="m", body=BODY)
        out += [("baseline router, 1 deployment", calls, via(r, old_req), "d"),
                ("baseline stream, 1 deployment", calls // 4, via_stream(r, old_req), "s")]
    return out


async def main(calls: int, repeat: int, baseline: str | None) -> None:
    """Every case once per round, rounds interleaved, best round kept: all cases see the same noise."""
    todo = cases(calls, baseline)
    for _, n, one, _ in todo:
        await timed(min(n, 2000), one)  # warm up
    best = [float("inf")] * len(todo)
    for _ in range(repeat):
        for i, (_, n, one, _) in enumerate(todo):
            best[i] = min(best[i], await timed(n, one))
    ref = {"d": best[0], "s": best[next(i for i, c in enumerate(todo) if c[0].startswith("stream of"))]}
    loop = type(asyncio.get_running_loop()).__module__
    print(f"python {platform.python_version()}, {platform.machine()}, loop {loop}, best of {repeat} rounds")
    print(f"{'case':58} {'µs/call':>9} {'added µs':>9}")
    for (label, _, _, against), t in zip(todo, best, strict=True):
        added = t - ref[against] if against else 0.0
        print(f"{label:58} {t:9.2f} {added:9.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline", help="path of another router.py to measure the same way")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(args.calls, args.repeat, args.baseline))
    except ImportError:
        asyncio.run(main(args.calls, args.repeat, args.baseline))
