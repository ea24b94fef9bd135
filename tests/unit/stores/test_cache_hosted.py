"""A worker's response cache under `aigw serve --workers N` without Redis: its own memory, then the entries its
parent keeps for every worker (two stores here, each with its own connection, stand for two workers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from aigw.stores.cache_hosted import HostedCache, LayeredCacheStore
from aigw.stores.cache_memory import MemoryCacheStore
from aigw.stores.counter_host import CounterHost
from aigw.stores.failures import StoreSkipped


@pytest.fixture
def host() -> Iterator[CounterHost]:
    h = CounterHost(60.0, (1000, 1_000_000, 8))
    h.start()
    try:
        yield h
    finally:
        h.stop()


def worker(path: str, copy_ttl_s: float = 60.0) -> LayeredCacheStore:
    return LayeredCacheStore(MemoryCacheStore(1000, 1_000_000), HostedCache(path, timeout_s=0.5), copy_ttl_s)


def test_an_answer_stored_by_one_worker_is_found_by_another_and_kept_there(host: CounterHost) -> None:
    async def main() -> None:
        a, b = worker(host.path), worker(host.path)
        await a.set("t1:k", b"answer", 60)
        assert a.get_now("t1:k") == b"answer"  # the storing worker's own copy: no call
        assert b.get_now("t1:k") is None  # not in the other's memory yet...
        assert await b.get("t1:k") == b"answer"  # ... but its parent has it
        assert b.get_now("t1:k") == b"answer"  # and now the other keeps a copy
        assert await b.get("t1:nothing") is None
        await a.aclose()
        await b.aclose()

    asyncio.run(main())


def test_a_copy_taken_from_the_parent_ends_when_the_entry_does(host: CounterHost) -> None:
    async def main() -> None:
        a, b = worker(host.path), worker(host.path)
        await a.set("t1:k", b"answer", 0.6)
        await asyncio.sleep(0.3)
        assert await b.get("t1:k") == b"answer"
        await asyncio.sleep(0.4)  # 0.7 s after it was stored: gone everywhere, not 0.6 s after the copy
        assert b.get_now("t1:k") is None and await b.get("t1:k") is None and a.get_now("t1:k") is None
        await a.aclose()
        await b.aclose()

    asyncio.run(main())


def test_a_worker_serves_an_entry_another_refreshed_old_for_its_copy_time_at_most(host: CounterHost) -> None:
    async def main() -> None:
        a, b = worker(host.path, copy_ttl_s=0.3), worker(host.path, copy_ttl_s=0.3)
        await a.set("t1:k", b"old", 60)
        assert await b.get("t1:k") == b"old"
        await a.set("t1:k", b"new", 60)  # a's client asked for a fresh answer (no-cache)
        assert b.get_now("t1:k") == b"old"  # b's copy...
        await asyncio.sleep(0.35)
        assert b.get_now("t1:k") is None  # ... ends after its copy time, not with the entry's hour
        assert await b.get("t1:k") == b"new"
        none = worker(host.path, copy_ttl_s=0)  # near_ttl_s 0: no copies, every hit asks the parent
        assert await none.get("t1:k") == b"new" and none.get_now("t1:k") is None
        for s in (a, b, none):
            await s.aclose()

    asyncio.run(main())


def test_a_purge_empties_the_parent_and_counts_an_answer_once(host: CounterHost) -> None:
    async def main() -> None:
        a, b = worker(host.path), worker(host.path)
        await a.set("t1:m1:k", b"one", 60)
        await a.set("t2:m1:k", b"two", 60)
        assert await b.get("t1:m1:k") == b"one"
        only_parent = worker(host.path)
        await only_parent.shared.set("t1:m1:other", b"three", 60)  # held by the parent alone
        assert await a.purge(["t1:*"]) == 2  # one in both places counts once, plus the parent's own
        assert await a.get("t1:m1:k") is None and await a.get("t1:m1:other") is None
        assert b.get_now("t1:m1:k") is None  # the other worker's copy too, before the purge log is read
        assert await b.get("t1:m1:k") is None
        assert await b.get("t2:m1:k") == b"two"  # another tenant's entry stays
        for s in (a, b, only_parent):
            await s.aclose()

    asyncio.run(main())


def test_once_a_purge_returns_no_worker_serves_its_copy_of_a_purged_answer(host: CounterHost) -> None:
    """Another worker's copies outlived a purge until it read the purge log (~0.25 s): a client that purged and
    asked again at once could be served the purged answer. Now a worker's next lookup drops its copies when its
    parent has purged since (read from a shared page, no call); what the purge kept is asked of the parent."""
    async def main() -> None:
        a, b = worker(host.path), worker(host.path)
        await a.set("t1:m1:k", b"one", 60)
        await a.set("t2:m1:k", b"two", 60)
        assert await b.get("t1:m1:k") == b"one" and await b.get("t2:m1:k") == b"two"  # b keeps copies
        assert await a.purge(["t1:*"]) == 1
        assert b.get_now("t1:m1:k") is None and await b.get("t1:m1:k") is None
        assert b.get_now("t2:m1:k") is None  # every copy went: b does not know what the purge named...
        assert await b.get("t2:m1:k") == b"two" and b.get_now("t2:m1:k") == b"two"  # ... the parent still has it
        await b.purge_local(["t1:*"])  # the purge log read later changes nothing
        assert b.get_now("t2:m1:k") == b"two"
        await a.aclose()
        await b.aclose()

    asyncio.run(main())


def test_without_the_parent_a_worker_keeps_its_own_answers_and_its_calls_fail_fast(tmp_path: object) -> None:
    host = CounterHost(60.0, (1000, 1_000_000, 8))
    host.start()
    path = host.path

    async def main() -> None:
        a = worker(path)
        await a.set("t1:k", b"answer", 60)
        host.stop()  # the parent's host is gone (the socket too)
        assert a.get_now("t1:k") == b"answer"  # its own copies still answer, with no call
        started = time.monotonic()
        with pytest.raises(OSError):
            await a.get("t1:other")
        with pytest.raises(StoreSkipped):  # skipped for a moment after a failure: no wait on every miss
            await a.get("t1:other")
        with pytest.raises(StoreSkipped):
            await a.set("t1:new", b"x", 60)
        assert a.get_now("t1:new") == b"x"  # stored in its own memory all the same
        assert time.monotonic() - started < 1.0
        await a.aclose()

    asyncio.run(main())


def test_a_host_without_a_cache_refuses_cache_calls(tmp_path: object) -> None:
    host = CounterHost(60.0)  # tenancy's counters only: no cache block configured
    host.start()
    try:
        async def main() -> None:
            a = worker(host.path)
            with pytest.raises(RuntimeError, match="no such counter call"):
                await a.get("t1:k")
            await a.aclose()

        asyncio.run(main())
    finally:
        host.stop()


def test_workers_share_one_semantic_index_in_their_parent(host: CounterHost) -> None:
    import numpy as np

    from aigw.stores.semantic_hosted import HostedSemanticIndex

    def unit(*xs: float) -> np.ndarray:
        v = np.asarray(xs, dtype=np.float32)
        return v / np.linalg.norm(v)

    async def main() -> None:
        a, b = worker(host.path), worker(host.path)
        ia, ib = HostedSemanticIndex(a.shared), HostedSemanticIndex(b.shared)
        await ia.add("t1:ctx", unit(1, 0, 0), "t1:k1", 60, b"")
        await ia.add("t2:ctx", unit(1, 0, 0), "t2:k1", 60, b"")
        match = await ib.search("t1:ctx", unit(1, 0.1, 0), 0.9)  # asked of the other worker
        assert match is not None and match.entry_id == "t1:k1" and 0.99 < match.score <= 1.0
        assert await ib.search("t1:ctx", unit(0, 1, 0), 0.9) is None  # below the threshold
        assert await ib.search("t1:ctx", unit(1, 0), 0.9) is None  # another embedder's length: no match
        await ib.discard("t1:ctx", "t1:k1")
        assert await ia.search("t1:ctx", unit(1, 0, 0), 0.9) is None
        assert await ia.purge(["t2:*"]) == 1
        assert await ib.search("t2:ctx", unit(1, 0, 0), 0.9) is None
        await a.aclose()
        await b.aclose()

    asyncio.run(main())


class HeldRead(HostedCache):
    """A worker's link to its parent whose answers to ``get`` are read at once but reach the worker only when
    ``gate`` opens (an answer still on its way while the worker purges)."""

    gate: asyncio.Event

    async def get_entry(self, key: str) -> tuple[bytes, float] | None:
        found = await super().get_entry(key)
        await self.gate.wait()
        return found


@pytest.mark.parametrize("purge", ["purge", "purge_local"])
def test_an_entry_read_from_the_parent_across_a_purge_is_not_kept_as_a_copy(host: CounterHost, purge: str) -> None:
    """A worker's read of the parent that was answered before a purge and reached it after (the purge it took, or
    one another worker announced) kept the purged answer as its copy: that worker served it for ``near_ttl_s``
    after the purge said it was gone. The read's own request still gets it (it asked first)."""
    async def main() -> None:
        a = worker(host.path)
        held = HeldRead(host.path, timeout_s=0.5)
        held.gate = asyncio.Event()
        b = LayeredCacheStore(MemoryCacheStore(1000, 1_000_000), held, 60.0)
        await a.set("t1:k", b"answer", 60)
        reading = asyncio.ensure_future(b.get("t1:k"))
        await asyncio.sleep(0.1)  # the parent answered the read
        if purge == "purge":
            assert await b.purge(None) == 1
        else:
            await a.purge(None)  # another worker took it: the parent's entry is gone, then b drops its own
            await b.purge_local(None)
        held.gate.set()
        assert await reading == b"answer"
        assert b.get_now("t1:k") is None and await b.get("t1:k") is None
        await a.aclose()
        await b.aclose()

    asyncio.run(main())
