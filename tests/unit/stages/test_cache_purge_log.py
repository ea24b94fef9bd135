"""A purge reaches the other processes' own copies through the purge log: their memory stores,
semantic indexes and near copies of shared entries, within a poll of the log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from aigw.pipeline.stages.cache_purge import PurgeFailed
from aigw.stores.cache_memory import MemoryCacheStore
from aigw.stores.purge_log import FilePurgeLog, Purge
from tests.unit.stages.cache_harness import Harness
from tests.unit.stages.test_cache_purge import SharedStore

POLL_S = 0.01


async def eventually(check: Callable[[], object], limit_s: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(POLL_S)


def process(log: object, stores: dict[str, object] | None = None, **cache: object) -> Harness:
    """One gateway process's cache stage, following ``log``."""
    h = Harness({"mode": "exact", **cache}, stores=stores, purge_log=log)
    h.stage.purger.poll_s = POLL_S
    return h


async def started(*processes: Harness) -> None:
    for h in processes:
        await h.stage.start()
    await asyncio.sleep(POLL_S * 5)  # each has read where the log ends


async def stopped(*processes: Harness) -> None:
    for h in processes:
        await h.stage.stop()


async def test_a_purge_on_one_worker_empties_the_others_memory_store(tmp_path: Path) -> None:
    log = FilePurgeLog(str(tmp_path / "purges.log"))
    a, b = process(log), process(log)
    await started(a, b)
    try:
        for h in (a, b):
            for tenant in ("t1", "t2"):
                await h.ask("the roadmap", tenant=tenant)
        assert await a.stage.purge("t1") == {"memory": 1}
        await eventually(lambda: b.stage.stats.purged == 1)
        assert (await b.ask("the roadmap", tenant="t1")).cache == "miss"
        assert (await b.ask("the roadmap", tenant="t2")).cache == "hit"
        await asyncio.sleep(POLL_S * 5)
        assert a.stage.stats.purged == 1  # the announcer did not purge a second time on reading it back
        assert (await a.ask("the roadmap", tenant="t2")).cache == "hit"
    finally:
        await stopped(a, b)


async def test_a_models_purge_reaches_the_others_narrowed_to_that_model(tmp_path: Path) -> None:
    log = FilePurgeLog(str(tmp_path / "purges.log"))
    a, b = process(log), process(log)
    await started(a, b)
    try:
        for model in ("mock", "other"):
            await b.ask("the roadmap", model=model)
        await a.stage.purge(None, "other")
        await eventually(lambda: b.stage.stats.purged == 1)
        assert (await b.ask("the roadmap", model="other")).cache == "miss"
        assert (await b.ask("the roadmap", model="mock")).cache == "hit"
    finally:
        await stopped(a, b)


async def test_the_other_replicas_near_copies_of_shared_entries_go(tmp_path: Path) -> None:
    log, shared = FilePurgeLog(str(tmp_path / "purges.log")), SharedStore()
    a = process(log, {"redis": shared}, backend="redis", near_ttl_s=60)
    b = process(log, {"redis": shared}, backend="redis", near_ttl_s=60)
    await started(a, b)
    try:
        await a.ask("the roadmap")
        assert (await b.ask("the roadmap")).cache == "hit"  # b keeps a near copy from here on
        assert await a.stage.purge("t1") == {"redis": 1}
        assert shared.data == {}
        before = b.upstream.calls
        await eventually(lambda: not any(len(n) for n in b.stage._near.values()))
        assert (await b.ask("the roadmap")).cache == "miss"
        assert b.upstream.calls == before + 1
    finally:
        await stopped(a, b)


async def test_a_purge_that_cannot_be_announced_is_a_failed_purge(tmp_path: Path) -> None:
    h = process(FilePurgeLog(str(tmp_path / "no-such-dir" / "purges.log")))
    await h.ask("the roadmap")
    with pytest.raises(PurgeFailed) as failed:
        await h.stage.purge("t1")
    assert failed.value.backend == "purge log" and failed.value.done == {"memory": 1}


class FlakyLog(FilePurgeLog):
    """Fails its first reads, as a Redis blip would."""

    def __init__(self, path: str, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    async def since(self, cursor: str) -> tuple[str, list[Purge]]:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("log away")
        return await super().since(cursor)


async def test_the_watch_outlives_a_log_that_fails_for_a_while(tmp_path: Path) -> None:
    path = str(tmp_path / "purges.log")
    a, b = process(FilePurgeLog(path)), process(FlakyLog(path, failures=3))
    await started(a, b)
    try:
        await b.ask("the roadmap")
        await a.stage.purge(None)
        await eventually(lambda: b.stage.stats.purged == 1)
        assert b.stage.purger.watch_errors == 3
    finally:
        await stopped(a, b)
    assert b.stage.purger._task is None


class PurgeFailsOnce(MemoryCacheStore):
    """A memory store whose first purge fails (nothing deleted), as any store call might."""

    def __init__(self) -> None:
        super().__init__(1000, 10_000_000)
        self.purge_calls = 0

    async def purge(self, patterns: list[str] | None, counts: Callable[[str], bool] | None = None) -> int:
        self.purge_calls += 1
        if self.purge_calls == 1:
            raise RuntimeError("store busy")
        return await super().purge(patterns, counts)


class HeldLog(FilePurgeLog):
    """Reads nothing new while ``holding``."""

    holding = False

    async def since(self, cursor: str) -> tuple[str, list[Purge]]:
        return (cursor, []) if self.holding else await super().since(cursor)


async def test_a_purge_this_process_failed_to_apply_is_applied_at_the_next_turn_with_those_after_it(
        tmp_path: Path) -> None:
    path = str(tmp_path / "purges.log")
    held = HeldLog(path)
    a, b = process(FilePurgeLog(path)), process(held, {"memory": PurgeFailsOnce()})
    await started(a, b)
    try:
        for tenant in ("t1", "t2"):
            await b.ask("the roadmap", tenant=tenant)
        held.holding = True  # both purges are in the log before b reads on: one read, two purges
        await a.stage.purge("t1")
        await a.stage.purge("t2")
        held.holding = False
        await eventually(lambda: b.stage.stats.purged == 2)
        assert b.stage.purger.watch_errors == 1
        for tenant in ("t1", "t2"):
            assert (await b.ask("the roadmap", tenant=tenant)).cache == "miss"
    finally:
        await stopped(a, b)


async def test_a_purge_another_worker_reads_in_the_log_leaves_the_parents_semantic_index_alone(
        tmp_path: Path) -> None:
    """`aigw serve --workers N` without Redis: the parent keeps one semantic index for every worker, emptied by
    the worker that took the purge. The others, applying the purge from the log a moment later, emptied the
    parent's buckets again: a question answered in between lost its vector, and its paraphrases missed in every
    worker (seen with two workers: after `DELETE /admin/cache`, a paraphrase of the next question was a miss)."""
    from aigw.stores.cache_hosted import HostedCache, LayeredCacheStore
    from aigw.stores.counter_host import CounterHost
    from aigw.stores.semantic_hosted import HostedSemanticIndex
    from tests.unit.stages.cache_harness import FakeEmbedder

    host = CounterHost(60.0, (1000, 10_000_000, 8))
    host.start()
    path = str(tmp_path / "purges.log")
    held = HeldLog(path)
    embedder = FakeEmbedder()
    embedder.at_similarity("How tall is the Eiffel tower?", "Eiffel tower height?", 0.95)
    clients: list[HostedCache] = []

    def worker(log: FilePurgeLog) -> Harness:
        client = HostedCache(host.path, timeout_s=1.0)
        clients.append(client)
        h = Harness({"mode": "semantic", "timeout_ms": 1000,
                     "semantic": {"embedding_model": "fake-embed", "threshold": 0.9}},
                    stores={"memory": LayeredCacheStore(MemoryCacheStore(1000, 10_000_000), client, 60.0)},
                    indexes={"memory": HostedSemanticIndex(client)}, embedder=embedder, purge_log=log)
        h.stage.purger.poll_s = POLL_S
        return h

    a, b = worker(FilePurgeLog(path)), worker(held)
    await started(a, b)
    try:
        await b.ask("the roadmap")  # b keeps a copy: it counts one when it applies the purge
        held.holding = True  # b reads the log only after the next question was answered
        await a.stage.purge(None)
        assert (await a.ask("Eiffel tower height?")).cache == "miss"
        held.holding = False
        await eventually(lambda: b.stage.stats.purged == 1)
        hit = await b.ask("How tall is the Eiffel tower?")
        assert (hit.cache, hit.ctx.response_headers.get("x-aigw-cache-match")) == ("hit", "semantic")
        assert a.upstream.calls == 1 and b.upstream.calls == 1  # the roadmap (b) and the tower (a)
    finally:
        await stopped(a, b)
        for client in clients:
            await client.aclose()
        host.stop()
