"""The key filter: unknown keys are read within a budget, past it the set of key hashes answers without a read,
and when the set cannot tell the caller gets a 503 ``key_lookups_throttled``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest

from aigw import errors
from aigw.http.key_filter import MAX_AGE_S, THROTTLED, KeyFilter
from aigw.http.key_lookup import KeyCache
from aigw.stores.base import ApiKey, Grant, Project, Tenant
from aigw.stores.keygen import hash_secret, new_secret
from aigw.stores.memory import MemoryKeyVersion
from tests.support.clock import ManualClock

BUDGET = 5


class Store:
    """Keys by hash; counts every read, and can fail or hold ``key_hashes``."""

    def __init__(self, *hashes: str) -> None:
        self.hashes = list(hashes)
        self.grant_reads = 0
        self.full_reads = 0
        self.since_reads = 0
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def grant_by_hash(self, key_hash: str) -> Grant | None:
        self.grant_reads += 1
        if key_hash not in self.hashes:
            return None
        key = ApiKey(id="k1", tenant_id="t1", project_id="p1", key_hash=key_hash, prefix="sk-aigw-xxxx")
        return Grant(key, Project(id="p1", tenant_id="t1", name="p"), Tenant(id="t1", name="t"))

    async def key_hashes(self, since: float | None) -> tuple[list[str], float]:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("database away")
        if since is None:
            self.full_reads += 1
        else:
            self.since_reads += 1
        return list(self.hashes), 0.0


def _spawn(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(coro, name=name)


@pytest.fixture
async def parts() -> AsyncIterator[tuple[KeyFilter, Store, ManualClock]]:
    store, clock = Store(hash_secret("known")), ManualClock()
    key_filter = KeyFilter(store, clock, _spawn, BUDGET, refresh_s=0.01, idle_s=60)  # type: ignore[arg-type]
    try:
        yield key_filter, store, clock
    finally:
        await key_filter.stop()


def _unknown(i: int) -> str:
    return hash_secret(f"made-up-{i}")


async def _until(condition: Any, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.005)


async def _past_budget(key_filter: KeyFilter, start: int) -> bool:
    """The filter's answer for an unknown key once what the budget has refilled is spent."""
    for i in range(4 * BUDGET):
        if not await key_filter.admits(_unknown(start + i)):
            return False
    raise AssertionError("the budget never ran out")


async def test_within_the_budget_every_key_is_read_and_no_set_is_loaded(parts: Any) -> None:
    key_filter, store, _ = parts
    assert [await key_filter.admits(_unknown(i)) for i in range(BUDGET)] == [True] * BUDGET
    assert not key_filter.active and store.full_reads == 0


async def test_past_the_budget_the_set_is_loaded_once_and_answers_without_reads(parts: Any) -> None:
    key_filter, store, _ = parts
    for i in range(BUDGET):
        await key_filter.admits(_unknown(i))
    answers = [await key_filter.admits(_unknown(i)) for i in range(BUDGET, 200)]
    assert answers == [False] * len(answers)  # no key: the caller reads nothing
    assert await key_filter.admits(hash_secret("known"))  # a key: read as before
    assert key_filter.active and store.full_reads == 1


async def test_the_budget_refills_with_time(parts: Any) -> None:
    key_filter, _, clock = parts
    for i in range(BUDGET + 3):
        await key_filter.admits(_unknown(i))
    clock.t += 1.0  # one second: BUDGET reads again
    assert [await key_filter.admits(_unknown(100 + i)) for i in range(BUDGET + 1)] == [True] * BUDGET + [False]


async def test_a_key_made_on_this_replica_is_in_the_set_at_once_even_while_it_loads(parts: Any) -> None:
    key_filter, store, _ = parts
    store.gate = asyncio.Event()  # the load waits
    for i in range(BUDGET):
        await key_filter.admits(_unknown(i))
    pending = asyncio.ensure_future(key_filter.admits(hash_secret("made-here")))
    await _until(lambda: key_filter.active)
    key_filter.add(hash_secret("made-here"))  # saved after the load read the table: not in what it read
    store.gate.set()
    assert await pending
    key_filter.add(hash_secret("made-later"))
    assert await key_filter.admits(hash_secret("made-later"))


async def test_a_key_made_on_another_replica_is_in_the_set_after_its_next_refresh(parts: Any) -> None:
    key_filter, store, _ = parts
    for i in range(BUDGET + 1):
        await key_filter.admits(_unknown(i))
    assert not await key_filter.admits(hash_secret("elsewhere"))
    store.hashes.append(hash_secret("elsewhere"))  # what the store's next read of changes returns
    reads = store.since_reads
    await _until(lambda: store.since_reads > reads + 1)
    assert await key_filter.admits(hash_secret("elsewhere"))
    assert store.full_reads == 1


async def test_a_set_that_cannot_load_answers_503_key_lookups_throttled(parts: Any) -> None:
    key_filter, store, _ = parts
    store.fail = True
    for i in range(BUDGET):
        assert await key_filter.admits(_unknown(i))
    with pytest.raises(errors.Unavailable) as caught:
        await key_filter.admits(_unknown(99))
    assert caught.value.code == THROTTLED and caught.value.retry_after == 1.0 and caught.value.status == 503
    assert "made-up" not in caught.value.message


async def test_a_set_whose_refresh_fails_past_max_age_cannot_tell(parts: Any) -> None:
    key_filter, store, clock = parts
    for i in range(BUDGET + 1):
        await key_filter.admits(_unknown(i))
    assert not await key_filter.admits(_unknown(50))
    store.fail = True
    failed = key_filter.read_errors
    await _until(lambda: key_filter.read_errors > failed)
    clock.t += MAX_AGE_S / 2  # a refresh failed, the set is still young enough: it answers
    assert not await _past_budget(key_filter, 100)
    clock.t += MAX_AGE_S  # ... until it is older than MAX_AGE_S
    with pytest.raises(errors.Unavailable):
        await _past_budget(key_filter, 200)
    store.fail = False  # the store is back: the set answers again
    await _until(lambda: key_filter._current(clock.monotonic()) is not None)
    assert not await _past_budget(key_filter, 300)


async def test_the_set_is_dropped_once_the_budget_has_not_run_out_for_idle_s() -> None:
    store, clock = Store(), ManualClock()
    key_filter = KeyFilter(store, clock, _spawn, 1, refresh_s=0.01, idle_s=30)  # type: ignore[arg-type]
    try:
        await key_filter.admits(_unknown(0))
        assert not await key_filter.admits(_unknown(1))
        assert key_filter.active
        clock.t += 31
        await _until(lambda: not key_filter.active)
        assert await key_filter.admits(_unknown(2))  # the budget again, no set
        assert store.full_reads == 1
    finally:
        await key_filter.stop()


async def test_a_budget_of_zero_asks_the_set_for_every_key(parts: Any) -> None:
    store = Store(hash_secret("known"))
    key_filter = KeyFilter(store, ManualClock(), _spawn, 0, refresh_s=0.01)  # type: ignore[arg-type]
    try:
        assert not await key_filter.admits(_unknown(0))
        assert await key_filter.admits(hash_secret("known"))
    finally:
        await key_filter.stop()


async def test_a_stopped_filter_loads_no_set_again(parts: Any) -> None:
    key_filter, store, _ = parts
    for i in range(BUDGET):
        await key_filter.admits(_unknown(i))
    await key_filter.stop()
    with pytest.raises(errors.Unavailable):
        await key_filter.admits(_unknown(99))
    assert not key_filter.active and store.full_reads == 0


# -- through the key cache ---------------------------------------------------------------------------------


async def test_the_cache_reads_no_malformed_secret_and_past_the_budget_no_unknown_one(parts: Any) -> None:
    key_filter, store, _ = parts
    secret = new_secret()
    store.hashes.append(hash_secret(secret))
    cache = KeyCache(store, MemoryKeyVersion(), ManualClock(), key_filter=key_filter)  # type: ignore[arg-type]
    for bad in (secret[:-1], secret + "A", secret[:-1] + "!", "sk-aigw-", "x" + secret[1:]):
        assert await cache.lookup(bad) is None
    assert store.grant_reads == 0
    for _ in range(100):
        assert await cache.lookup(new_secret()) is None
    assert store.grant_reads == BUDGET
    assert await cache.lookup(secret) is not None  # a real key still works, read once
    assert store.grant_reads == BUDGET + 1


async def test_keys_held_before_a_version_move_are_read_again_without_the_budget(parts: Any) -> None:
    key_filter, store, _ = parts
    secrets = [new_secret() for _ in range(3 * BUDGET)]
    store.hashes += [hash_secret(s) for s in secrets]
    version = MemoryKeyVersion()
    cache = KeyCache(store, version, ManualClock(), key_filter=key_filter)  # type: ignore[arg-type]
    await cache.check_version()
    for i, secret in enumerate(secrets):  # a gateway's keys come in over time
        key_filter._tokens = BUDGET  # as if each came a second apart
        assert await cache.lookup(secret) is not None, i
    await version.bump()
    await cache.check_version()  # an admin change anywhere: the cache is dropped
    for secret in secrets:  # every key at once, as on a busy gateway: no flood, no set
        assert await cache.lookup(secret) is not None
    assert not key_filter.active and store.full_reads == 0
