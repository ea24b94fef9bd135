"""A slow or dead cache backend never fails or slows a request beyond a short timeout."""

from __future__ import annotations

import asyncio
import time

from aigw.stores.cache_memory import MemoryCacheStore
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


class SlowAt:
    """A backend whose n-th calls (gets and sets, counted together) answer late, as when this
    process paused; every other call answers at once."""

    name = "memory"

    def __init__(self, slow_calls: set[int]) -> None:
        self.slow_calls = slow_calls
        self.calls = 0
        self.gets = 0

    async def _answer(self) -> None:
        self.calls += 1
        if self.calls in self.slow_calls:
            await asyncio.sleep(1)

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        await self._answer()
        return None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._answer()

    async def ping(self) -> None:
        return None


async def test_one_slow_answer_is_a_strike_not_a_failure() -> None:
    store = SlowAt(slow_calls={1})
    h = Harness({"mode": "exact", "timeout_ms": 20, "retry_after_s": 5,
                 "near_ttl_s": 0}, stores={"memory": store})
    first = await h.ask()
    assert first.cache == "miss" and first.body is not None and first.ctx.state["cache_result"] == "error"
    await h.ask()  # still tried: one timeout did not mark the backend as failing
    assert store.gets == 2 and h.stage.stats.backend_skipped == 0
    assert (await h.stage.health())[0] == "ok"


async def test_timeouts_in_a_row_mark_the_backend_as_failing() -> None:
    store = SlowAt(slow_calls={1, 2})  # the first request's get and set
    h = Harness({"mode": "exact", "timeout_ms": 20, "retry_after_s": 5}, stores={"memory": store})
    await h.ask()
    await h.ask()  # skipped: two timeouts in a row
    assert store.gets == 1 and h.stage.stats.backend_skipped >= 1
    status, detail = await h.stage.health()
    assert status == "degraded" and "TimeoutError" in detail


async def test_an_answer_in_time_clears_the_strike() -> None:
    store = SlowAt(slow_calls={1, 3})  # first get slow, its set on time, second get slow
    h = Harness({"mode": "exact", "timeout_ms": 20, "retry_after_s": 5,
                 "near_ttl_s": 0}, stores={"memory": store})
    for _ in range(3):
        await h.ask()
    assert store.gets == 3 and h.stage.stats.backend_skipped == 0


class FailingMemory(MemoryCacheStore):
    """The in-process store, read with a plain call on the hit path, failing on that call."""

    def __init__(self) -> None:
        super().__init__(100, 1 << 20)
        self.reads = 0

    def get_now(self, key: str) -> bytes | None:
        self.reads += 1
        raise MemoryError("store broken")


async def test_a_failing_in_memory_store_is_a_miss_and_then_skipped_like_any_backend() -> None:
    store = FailingMemory()
    h = Harness({"mode": "exact", "retry_after_s": 5}, stores={"memory": store})
    answer = await h.ask()
    assert answer.cache == "miss" and answer.body is not None and h.upstream.calls == 1
    assert answer.ctx.state["cache_result"] == "error" and h.stage.stats.backend_errors == 1
    await h.ask()  # within retry_after: not read again
    assert store.reads == 1 and h.stage.stats.backend_skipped >= 1
    assert (await h.stage.health())[0] == "degraded"


async def test_a_request_whose_lookup_timed_out_makes_no_second_call_to_that_backend() -> None:
    class HangingIndex:
        def __init__(self) -> None:
            self.searches = 0

        async def search(self, bucket: str, vector: object, threshold: float) -> None:
            self.searches += 1
            await asyncio.sleep(30)

        async def add(self, bucket: str, vector: object, entry_id: str, ttl_s: float) -> None:
            await asyncio.sleep(30)

        async def purge(self, patterns: list[str] | None) -> int:
            return 0

    store, index = BrokenStore(hang=True), HangingIndex()
    h = Harness({"mode": "semantic", "timeout_ms": 30, "retry_after_s": 0,
                 "semantic": {"embedding_model": "fake-embed"}}, stores={"memory": store})
    h.stage.indexes["memory"] = index  # type: ignore[assignment]
    answer = await h.ask()  # the exact GET times out (one strike): the semantic search would wait as long again
    assert answer.cache == "miss" and answer.body is not None
    assert index.searches == 0 and h.embedder.calls == 0


class SlowStore(MemoryCacheStore):
    """A shared backend (not in process) whose every read takes ``delay_s``."""

    in_process = False

    def __init__(self, delay_s: float) -> None:
        super().__init__(1000, 10_000_000)
        self.delay_s = delay_s

    async def get(self, key: str) -> bytes | None:
        await asyncio.sleep(self.delay_s)
        return await super().get(key)


async def test_a_requests_backend_calls_share_one_timeout() -> None:
    # a semantic lookup reads the exact key, searches, then reads the match's entry: three calls in a row
    # to a backend that takes 0.2 s a read; with timeout_ms 300 they may take 0.3 s in all, not 0.3 s each
    store = SlowStore(0.2)
    h = Harness({"mode": "semantic", "timeout_ms": 300, "retry_after_s": 0, "near_ttl_s": 0,
                 "semantic": {"threshold": 0.92, "embedding_model": "fake-embed"}}, stores={"memory": store})
    h.embedder.at_similarity("Which city is France's capital?", "What is the capital of France?", 0.95)
    await h.ask("What is the capital of France?")
    started = time.perf_counter()
    answer = await h.ask("Which city is France's capital?")
    assert time.perf_counter() - started < 0.38  # 0.4 s and a semantic hit, when each call had 0.3 s
    assert answer.cache == "miss" and answer.body is not None and answer.ctx.state["cache_result"] == "error"


async def test_a_worker_whose_parent_cannot_be_reached_still_answers_its_own_repeats(tmp_path: object) -> None:
    """`aigw serve --workers N` without Redis: while the parent's shared store failed (skipped for
    ``retry_after_s``), a worker stored nothing at all, not even in its own memory, so the same question to the
    same worker went upstream every time; one process's memory cache would have answered it. The worker keeps
    its own copy (for ``near_ttl_s``) and answers from it, as when the parent is there."""
    from aigw.stores.cache_hosted import HostedCache, LayeredCacheStore

    shared = HostedCache(f"{tmp_path}/no-parent.sock", timeout_s=0.2)
    h = Harness({"mode": "exact"}, stores={"memory": LayeredCacheStore(MemoryCacheStore(100, 100_000), shared, 5)})
    try:
        assert (await h.ask("the roadmap")).cache == "miss"  # the parent's lookup failed: skipped from now on
        assert h.stage.guard.failing("memory")
        assert (await h.ask("the roadmap")).cache == "hit"
        assert (await h.ask("the roadmap", tenant="t2")).cache == "miss"  # still one tenant's copy
        assert h.upstream.calls == 2
    finally:
        await shared.aclose()
