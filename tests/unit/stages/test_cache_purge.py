"""An admin purge: one tenant's answers (or all) leave every backend and this process's near copies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from aigw.pipeline.stages.cache_purge import PurgeFailed
from aigw.stores.cache_memory import MemoryCacheStore
from aigw.stores.key_glob import matcher
from aigw.stores.redis.cache import RedisCacheStore
from aigw.stores.redis.client import make_redis
from tests.unit.stages.cache_harness import Harness


class SharedStore:
    """A Redis stand-in (not in process, so the stage keeps near copies of its entries)."""

    name = "redis"

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.down = False

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self.data[key] = value

    async def ping(self) -> None:
        return None

    async def purge(self, patterns: list[str] | None, counts: Callable[[str], bool] | None = None) -> int:
        if self.down:
            raise ConnectionError("redis down")
        match = matcher(patterns) if patterns is not None else None
        doomed = [k for k in self.data if match is None or match(k)]
        for k in doomed:
            del self.data[k]
        return sum(counts is None or counts(k) for k in doomed)


async def test_a_tenants_purge_makes_its_next_question_a_miss_and_leaves_others_hits() -> None:
    h = Harness({"mode": "exact"})
    for tenant in ("t1", "t2"):
        await h.ask("the roadmap", tenant=tenant)
        assert (await h.ask("the roadmap", tenant=tenant)).cache == "hit"
    assert await h.stage.purge("t1") == {"memory": 1}
    assert (await h.ask("the roadmap", tenant="t1")).cache == "miss"
    assert (await h.ask("the roadmap", tenant="t2")).cache == "hit"
    assert await h.stage.purge(None) == {"memory": 2}  # t1's new answer and t2's
    assert (await h.ask("the roadmap", tenant="t2")).cache == "miss"
    assert h.stage.stats.purged == 3


async def test_entries_scoped_by_key_or_project_go_with_their_tenant() -> None:
    h = Harness({"mode": "exact", "scope": "key"})
    await h.ask("the roadmap", tenant="t1", key="k1")
    await h.ask("the roadmap", tenant="t1", key="k2")
    assert await h.stage.purge("t1") == {"memory": 2}


async def test_a_shared_backends_near_copies_go_too() -> None:
    shared = SharedStore()
    h = Harness({"mode": "exact", "backend": "redis", "near_ttl_s": 60}, stores={"redis": shared})
    await h.ask("the roadmap")
    assert (await h.ask("the roadmap")).cache == "hit"  # from the near copy from now on
    assert await h.stage.purge("t1") == {"redis": 1}
    assert (await h.ask("the roadmap")).cache == "miss"


async def test_a_backend_that_fails_mid_purge_says_which_and_what_went_before() -> None:
    shared = SharedStore()
    h = Harness({"mode": "exact"}, stores={"memory": MemoryCacheStore(1000, 10_000_000), "redis": shared})
    await h.ask("the roadmap")
    shared.down = True
    with pytest.raises(PurgeFailed) as failed:
        await h.stage.purge("t1")
    assert failed.value.backend == "redis" and failed.value.done == {"memory": 1}


async def test_a_models_purge_leaves_other_models_and_can_be_narrowed_to_a_tenant() -> None:
    h = Harness({"mode": "exact"})
    for tenant in ("t1", "t2"):
        for model in ("mock", "other"):
            await h.ask("the roadmap", tenant=tenant, model=model)
    assert await h.stage.purge("t1", "mock") == {"memory": 1}
    assert (await h.ask("the roadmap", tenant="t1", model="mock")).cache == "miss"
    assert (await h.ask("the roadmap", tenant="t2", model="mock")).cache == "hit"
    assert await h.stage.purge(None, "other") == {"memory": 2}
    assert (await h.ask("the roadmap", tenant="t1", model="other")).cache == "miss"
    assert (await h.ask("the roadmap", tenant="t2", model="mock")).cache == "hit"


async def test_semantic_buckets_go_with_their_entries() -> None:
    h = Harness({"mode": "semantic", "semantic": {"embedding_model": "fake-embed", "threshold": 0.9}})
    h.embedder.at_similarity("How tall is the Eiffel tower?", "Eiffel tower height?", 0.95)
    await h.ask("Eiffel tower height?")
    assert (await h.ask("How tall is the Eiffel tower?")).cache == "hit"
    index = h.stage.indexes["memory"]
    await h.ask("Eiffel tower height?", tenant="t2")
    assert index.size == 2  # type: ignore[attr-defined]
    await h.stage.purge("t1", "mock")
    assert index.size == 1  # type: ignore[attr-defined]  # t1's vectors went with its entries, t2's stayed
    assert (await h.ask("How tall is the Eiffel tower?")).cache == "miss"

class SlowPurgeStore:
    """A Redis stand-in whose purge takes a while (SCAN pages), answering reads meanwhile."""

    name = "redis"

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.purging = asyncio.Event()
        self.go_on = asyncio.Event()

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self.data[key] = value

    async def ping(self) -> None:
        return None

    async def purge(self, patterns: list[str] | None, counts: Callable[[str], bool] | None = None) -> int:
        self.purging.set()
        await self.go_on.wait()  # a SCAN page: requests are served meanwhile
        match = matcher(patterns) if patterns is not None else None
        doomed = [k for k in self.data if match is None or match(k)]
        for k in doomed:
            del self.data[k]
        return sum(counts is None or counts(k) for k in doomed)


async def test_an_entry_read_during_a_purge_is_not_served_from_a_near_copy_after_it() -> None:
    store = SlowPurgeStore()
    h = Harness({"mode": "exact", "backend": "redis", "retry_after_s": 0}, stores={"redis": store})
    assert (await h.ask()).cache == "miss"
    near = h.stage._near["redis"]
    near.purge(None)  # as if another replica had stored the answer: this one holds no copy yet
    purge = asyncio.create_task(h.stage.purge("t1"))
    await store.purging.wait()
    assert (await h.ask()).cache == "hit"  # read from the backend before the purge reached the entry
    store.go_on.set()
    assert await purge == {"redis": 1}
    after = await h.ask()
    assert after.cache == "miss" and h.upstream.calls == 2  # not the purged answer from the near copy


class SlowReadStore(SlowPurgeStore):
    """Its GET's reply arrives late: read before a purge deleted the entry, handed over after it."""

    def __init__(self) -> None:
        super().__init__()
        self.go_on.set()
        self.reading = asyncio.Event()
        self.reply = asyncio.Event()
        self.slow = False

    async def get(self, key: str) -> bytes | None:
        value = self.data.get(key)
        if self.slow:
            self.reading.set()
            await self.reply.wait()
        return value


async def test_a_read_in_flight_across_a_purge_is_not_kept_near() -> None:
    store = SlowReadStore()
    h = Harness({"mode": "exact", "backend": "redis", "retry_after_s": 0, "timeout_ms": 5000},
                stores={"redis": store})
    assert (await h.ask()).cache == "miss"
    h.stage._near["redis"].purge(None)  # another replica's answer: no copy here
    store.slow = True
    hit = asyncio.create_task(h.ask())
    await store.reading.wait()
    assert await h.stage.purge("t1") == {"redis": 1}
    store.slow = False
    store.reply.set()
    assert (await hit).cache == "hit"  # answered before the purge: fine
    after = await h.ask()
    assert after.cache == "miss" and h.upstream.calls == 2


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_purge_of_the_fallback_model_takes_the_answers_it_gave_for_another(backend: str) -> None:
    shared = SharedStore()
    stores = {"redis": shared} if backend == "redis" else None
    h = Harness({"mode": "exact", "backend": backend, "near_ttl_s": 60}, stores=stores)
    h.upstream.serve_as = "other"  # "mock" failed; its fallback "other" answered
    for tenant in ("t1", "t2"):
        await h.ask("the roadmap", tenant=tenant)
        hit = await h.ask("the roadmap", tenant=tenant)
        assert hit.cache == "hit" and hit.ctx.state["cache_hit"]["model"] == "other"
    await h.stage.purge("t1", "other")
    assert (await h.ask("the roadmap", tenant="t1")).cache == "miss"
    assert (await h.ask("the roadmap", tenant="t2")).cache == "hit"  # another tenant's purge leaves it
    await h.stage.purge(None, "mock")  # the model asked for: its answers go too, whoever gave them
    h.upstream.serve_as = None
    assert (await h.ask("the roadmap", tenant="t2")).cache == "miss"
    await h.stage.purge(None, "other")  # an answer the model asked for gave itself stays
    assert (await h.ask("the roadmap", tenant="t2")).cache == "hit"
    assert h.upstream.calls == 4



@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_purge_counts_answers_not_the_marks_beside_fallback_answers(backend: str,
                                                                           request: pytest.FixtureRequest) -> None:
    client = None
    stores: dict[str, Any] | None = None
    if backend == "redis":  # the real store against the run's own key prefix
        url, prefix = request.getfixturevalue("redis_isolated")
        client = make_redis(url)
        stores = {"redis": RedisCacheStore(client, prefix)}
    try:
        h = Harness({"mode": "exact", "backend": backend}, stores=stores)
        await h.ask("the roadmap")  # the model asked for answered
        h.upstream.serve_as = "other"  # "mock" failed, its fallback "other" answered: the answer and its mark
        await h.ask("the budget")
        assert (await h.ask("the budget")).cache == "hit"
        assert await h.stage.purge("t1") == {backend: 2}  # two answers: the mark went, uncounted
        assert h.stage.stats.purged == 2
        assert await h.stage.stores[backend].purge(None) == 0  # nothing was left behind, the mark included
        h.upstream.serve_as = None
        assert (await h.ask("the roadmap")).cache == "miss" and (await h.ask("the budget")).cache == "miss"
    finally:
        if client is not None:
            await client.aclose()
