"""A slow or dead cache backend never fails or slows a request beyond a short timeout."""

from __future__ import annotations

import asyncio
import time

from tests.unit.stages.cache_harness import Harness


class BrokenStore:
    name = "memory"

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang
        self.calls = 0

    async def get(self, key: str) -> bytes | None:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(30)
        raise ConnectionError("backend down")

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self.get(key)

    async def ping(self) -> None:
        await self.get("ping")


async def test_a_hanging_backend_costs_at_most_the_timeout() -> None:
    store = BrokenStore(hang=True)
    h = Harness({"mode": "exact", "timeout_ms": 30, "retry_after_s": 0}, stores={"memory": store})
    started = time.perf_counter()
    answer = await h.ask()
    assert time.perf_counter() - started < 0.5
    assert answer.cache == "miss" and answer.body is not None and h.upstream.calls == 1
    assert answer.ctx.state["cache_result"] == "error"
    assert h.stage.stats.backend_errors >= 1


async def test_after_a_failure_the_backend_is_skipped_then_retried() -> None:
    store = BrokenStore()
    h = Harness({"mode": "exact", "retry_after_s": 5}, stores={"memory": store})
    await h.ask()  # get fails; the store after it is skipped
    assert store.calls == 1
    await h.ask()
    assert store.calls == 1 and h.stage.stats.backend_skipped >= 2
    h.clock.t += 6
    await h.ask()
    assert store.calls == 2


async def test_health_is_degraded_not_down_while_the_backend_fails() -> None:
    store = BrokenStore()
    h = Harness({"mode": "exact"}, stores={"memory": store})
    status, detail = await h.stage.health()
    assert status == "degraded" and "ConnectionError" in detail
    healthy = Harness({"mode": "exact"})
    await healthy.ask()
    await healthy.ask()
    status, detail = await healthy.stage.health()
    assert status == "ok" and "hits=1" in detail


async def test_health_check_is_registered_as_non_critical() -> None:
    h = Harness({"mode": "exact"})
    check, critical = h.deps.services["health_checks"]["cache"]
    assert critical is False and (await check())[0] == "ok"
