"""The in-process cache store: LRU by entries and bytes, and TTLs on an injected clock."""

from __future__ import annotations

import asyncio

from aigw.stores.cache_memory import PURGE_CHUNK, MemoryCacheStore
from tests.support.clock import ManualClock


async def test_get_returns_what_was_set_until_its_ttl_ends() -> None:
    clock = ManualClock()
    store = MemoryCacheStore(max_entries=10, max_bytes=10_000, clock=clock)
    await store.set("k", b"answer", ttl_s=60)
    assert await store.get("k") == b"answer"
    clock.t += 59.9
    assert await store.get("k") == b"answer"
    clock.t += 0.2
    assert await store.get("k") is None
    assert len(store) == 0 and store.bytes == 0


async def test_least_recently_used_entry_goes_first_when_full() -> None:
    store = MemoryCacheStore(max_entries=2, max_bytes=10_000, clock=ManualClock())
    await store.set("a", b"1", 60)
    await store.set("b", b"2", 60)
    assert await store.get("a") == b"1"  # a is now the most recently used
    await store.set("c", b"3", 60)
    assert await store.get("b") is None
    assert await store.get("a") == b"1" and await store.get("c") == b"3"
    assert store.evictions == 1


async def test_byte_bound_evicts_and_an_oversized_value_is_not_stored() -> None:
    store = MemoryCacheStore(max_entries=100, max_bytes=1_000, clock=ManualClock())
    for i in range(10):
        await store.set(f"k{i}", b"x" * 200, 60)
    assert store.bytes <= 1_000
    assert await store.get("k9") == b"x" * 200
    assert await store.get("k0") is None
    await store.set("huge", b"x" * 5_000, 60)
    assert await store.get("huge") is None
    assert await store.get("k9") == b"x" * 200  # a refused value evicts nothing


async def test_overwrite_replaces_value_and_keeps_byte_count_exact() -> None:
    store = MemoryCacheStore(max_entries=10, max_bytes=10_000, clock=ManualClock())
    await store.set("k", b"x" * 100, 60)
    before = store.bytes
    await store.set("k", b"y" * 100, 60)
    assert store.bytes == before and len(store) == 1
    assert await store.get("k") == b"y" * 100


async def test_a_purge_drops_the_entries_its_patterns_match_and_nobody_elses() -> None:
    store = MemoryCacheStore(max_entries=10, max_bytes=10_000, clock=ManualClock())
    keys = ("t1:aaaa.1", "t1/k/key_1:aaaa.2", "t1/p/prj_1:bbbb.3", "t10:aaaa.4", "t2:aaaa.5")
    for key in keys:
        await store.set(key, b"answer", 60)
    assert await store.purge(["t1:*", "t1/*"]) == 3  # a tenant in every scope; t10 is another tenant
    assert [k for k in keys if store.get_now(k)] == ["t10:aaaa.4", "t2:aaaa.5"]
    left = MemoryCacheStore(max_entries=10, max_bytes=10_000, clock=ManualClock())
    for key in ("t10:aaaa.4", "t2:aaaa.5"):
        await left.set(key, b"answer", 60)
    assert store.bytes == left.bytes  # the byte bound counts only what is left
    assert await store.purge(["*:aaaa.*"]) == 2  # a model, every tenant
    await store.set("t3:b*b.6", b"answer", 60)
    assert await store.purge(["t3:b\\*b.*"]) == 1 and await store.purge(None) == 0  # "\\" makes a literal


async def test_a_purge_deletes_every_key_it_matches_but_counts_only_those_counts_accepts() -> None:
    store = MemoryCacheStore(max_entries=10, max_bytes=10_000, clock=ManualClock())
    for key in ("t1:aaaa.1", "t1:bbbb.via.aaaa.1", "t1:aaaa.2", "t2:aaaa.3"):
        await store.set(key, b"answer", 60)
    assert await store.purge(["t1:*"], counts=lambda key: ".via." not in key) == 2  # the mark went uncounted
    assert len(store) == 1 and store.get_now("t1:bbbb.via.aaaa.1") is None


async def test_a_big_purge_lets_other_work_run_between_chunks() -> None:
    store = MemoryCacheStore(max_entries=3 * PURGE_CHUNK, max_bytes=10**9, clock=ManualClock())
    for i in range(2 * PURGE_CHUNK + 10):
        await store.set(f"t1:aaaa.{i}", b"a", 60)
    ran: list[int] = []

    async def other() -> None:  # a request in flight
        ran.append(len(store))

    task = asyncio.get_running_loop().create_task(other())
    assert await store.purge(["t1:*"]) == 2 * PURGE_CHUNK + 10 and len(store) == 0
    await task
    assert ran and 0 < ran[0] < 2 * PURGE_CHUNK + 10  # it ran mid-purge: some entries gone, some left
