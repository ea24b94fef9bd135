"""The key cache: one database read per key per replica, dropped when the key version moves."""

from __future__ import annotations

import asyncio
import re

import pytest

from aigw import errors
from aigw.http.auth import Authenticator
from aigw.http.key_lookup import KeyCache
from aigw.stores.base import ApiKey, Grant, Limits, Project, Tenant
from aigw.stores.keygen import hash_secret, new_secret
from aigw.stores.memory import MemoryKeyVersion
from tests.support.clock import ManualClock

SECRET = new_secret()


class Store:
    def __init__(self) -> None:
        self.grants: dict[str, Grant] = {}
        self.reads = 0
        self.gate: asyncio.Event | None = None

    async def grant_by_hash(self, key_hash: str) -> Grant | None:
        self.reads += 1
        grant = self.grants.get(key_hash)
        if self.gate is not None:
            await self.gate.wait()
        return grant


def _grant(revoked: float | None = None, expires: float | None = None) -> Grant:
    key = ApiKey(id="k1", tenant_id="t1", project_id="p1", key_hash=hash_secret(SECRET), prefix=SECRET[:12],
                 allowed_models=["mock"], limits=Limits(rpm=5), revoked_at=revoked, expires_at=expires)
    return Grant(key, Project(id="p1", tenant_id="t1", name="p"), Tenant(id="t1", name="t"))


async def test_a_key_is_read_once_then_served_from_memory() -> None:
    store, version = Store(), MemoryKeyVersion()
    store.grants[hash_secret(SECRET)] = _grant()
    cache = KeyCache(store, version, ManualClock())  # type: ignore[arg-type]
    for _ in range(5):
        principal = await cache.lookup(SECRET)
        assert principal is not None and principal.tenant_id == "t1"
        assert principal.allowed_models == frozenset({"mock"}) and not principal.is_admin
    assert store.reads == 1
    assert await cache.lookup("not-a-gateway-key") is None and store.reads == 1


async def test_a_version_bump_drops_the_cache_so_changes_show() -> None:
    store, version = Store(), MemoryKeyVersion()
    cache = KeyCache(store, version, ManualClock())  # type: ignore[arg-type]
    await cache.check_version()
    assert await cache.lookup(SECRET) is None  # unknown: remembered as unknown...
    store.grants[hash_secret(SECRET)] = _grant()
    assert await cache.lookup(SECRET) is None
    await version.bump()  # ...until a change anywhere bumps the version
    await cache.check_version()
    assert await cache.lookup(SECRET) is not None
    store.grants[hash_secret(SECRET)] = _grant(revoked=999.0)
    await version.bump()
    await cache.check_version()
    assert await cache.lookup(SECRET) is None


async def test_expiry_is_checked_on_every_use() -> None:
    store, clock = Store(), ManualClock()
    store.grants[hash_secret(SECRET)] = _grant(expires=1005.0)
    cache = KeyCache(store, MemoryKeyVersion(), clock)  # type: ignore[arg-type]
    assert await cache.lookup(SECRET) is not None
    clock.t = 1005.0
    assert await cache.lookup(SECRET) is None


async def test_a_lookup_that_raced_an_invalidation_is_not_cached() -> None:
    store = Store()
    store.grants[hash_secret(SECRET)] = _grant()
    store.gate = asyncio.Event()
    cache = KeyCache(store, MemoryKeyVersion(), ManualClock())  # type: ignore[arg-type]
    pending = asyncio.get_running_loop().create_task(cache.lookup(SECRET))
    await asyncio.sleep(0)
    cache.invalidate()  # the key changed while the old row was in flight
    store.gate.set()
    assert await pending is not None
    store.gate = None
    await cache.lookup(SECRET)
    assert store.reads == 2  # the stale answer was not kept


async def test_the_version_watch_ends_even_when_a_cancel_is_swallowed() -> None:
    """redis-py's timeouts can eat a cancel that lands inside a call; shutdown must not hang on it."""

    class SwallowingVersion:
        async def get(self) -> int:
            try:  # noqa: SIM105 - spelled out: this is what a lost cancel looks like from outside
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                pass
            return 1

    cache = KeyCache(Store(), SwallowingVersion(), ManualClock(), refresh_s=0.001)  # type: ignore[arg-type]
    task = asyncio.get_running_loop().create_task(cache.watch())
    await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.wait({task}, timeout=0.2)
    cache.stop_watching()
    await asyncio.wait_for(task, timeout=1)  # ends at its next turn


async def test_the_memory_only_answer_reads_no_store_and_never_refuses() -> None:
    store, clock = Store(), ManualClock()
    store.grants[hash_secret(SECRET)] = _grant(expires=1005.0)
    cache = KeyCache(store, MemoryKeyVersion(), clock)  # type: ignore[arg-type]
    assert cache.cached(SECRET) is None and store.reads == 0  # not held yet: "ask lookup"
    held = await cache.lookup(SECRET)
    assert held is not None and cache.cached(SECRET) is held and store.reads == 1
    clock.t = 1005.0
    assert cache.cached(SECRET) is None  # expired: lookup gives the refusal
    clock.t = 1000.0
    cache.invalidate()  # e.g. revoked on another replica: the version moved
    assert cache.cached(SECRET) is None


async def test_the_authenticator_answers_known_callers_without_a_lookup() -> None:
    store = Store()
    store.grants[hash_secret(SECRET)] = _grant()
    cache = KeyCache(store, MemoryKeyVersion(), ManualClock())  # type: ignore[arg-type]
    auth = Authenticator("sk-master", cache.lookup, cache.cached)
    master = auth.known({"authorization": "Bearer sk-master"})
    assert master is not None and master.is_admin
    assert auth.known({"authorization": f"Bearer {SECRET}"}) is None  # not held: authenticate reads it
    assert (await auth.authenticate({"x-api-key": SECRET})).tenant_id == "t1"
    known = auth.known({"authorization": f"Bearer {SECRET}"})
    assert known is not None and known.key_id == "k1" and store.reads == 1
    assert auth.known({"authorization": "Bearer sk-aigw-unknown"}) is None
    with pytest.raises(errors.AuthError):
        await auth.authenticate({"authorization": "Bearer sk-aigw-unknown"})


async def test_a_key_revoked_after_use_is_refused_once_the_version_moves() -> None:
    """The memory-only answer remembers keys by the secret as presented: a version move forgets them."""
    store, version = Store(), MemoryKeyVersion()
    store.grants[hash_secret(SECRET)] = _grant()
    cache = KeyCache(store, version, ManualClock())  # type: ignore[arg-type]
    await cache.check_version()
    await cache.lookup(SECRET)
    for _ in range(3):
        assert cache.cached(SECRET) is not None  # in use, answered from memory
    store.grants[hash_secret(SECRET)] = _grant(revoked=999.0)  # revoked, e.g. on another replica
    await version.bump()
    await cache.check_version()
    assert cache.cached(SECRET) is None
    assert await cache.lookup(SECRET) is None and store.reads == 2


async def test_keys_remembered_by_secret_stay_bounded() -> None:
    store = Store()
    secrets = [new_secret() for _ in range(5)]
    for s in secrets:
        key = ApiKey(id=s[-6:], tenant_id="t1", project_id="p1", key_hash=hash_secret(s), prefix=s[:12])
        store.grants[hash_secret(s)] = Grant(key, Project(id="p1", tenant_id="t1", name="p"),
                                             Tenant(id="t1", name="t"))
    cache = KeyCache(store, MemoryKeyVersion(), ManualClock(), max_size=3)  # type: ignore[arg-type]
    for s in secrets:
        await cache.lookup(s)
        assert cache.cached(s) is not None
        assert len(cache._presented) <= 3


async def test_a_change_announced_while_the_store_was_away_reaches_the_other_replicas_once_it_is_back() -> None:
    class Shared(MemoryKeyVersion):
        """One version store for two replicas, which can be away."""

        down = False

        async def get(self) -> int:
            if self.down:
                raise ConnectionError("store away")
            return await super().get()

        async def bump(self) -> int:
            if self.down:
                raise ConnectionError("store away")
            return await super().bump()

    store, shared = Store(), Shared()
    store.grants[hash_secret(SECRET)] = _grant()
    a = KeyCache(store, shared, ManualClock(), refresh_s=0.005)  # type: ignore[arg-type]
    b = KeyCache(store, shared, ManualClock(), refresh_s=0.005)  # type: ignore[arg-type]
    await b.check_version()
    assert await b.lookup(SECRET) is not None  # b has the key cached
    shared.down = True
    store.grants[hash_secret(SECRET)] = _grant(revoked=1.0)  # revoked on a, saved in the database ...
    a.owe_bump()  # ... but the version bump failed (what the admin API does then)
    tasks = [asyncio.get_running_loop().create_task(c.watch()) for c in (a, b)]
    try:
        await asyncio.sleep(0.05)
        assert await b.lookup(SECRET) is not None  # nothing can reach b while the store is away
        status, detail = b.health()  # and /health/ready says so (the "keys" line)
        assert status == "degraded" and "not seen here" in detail and b.poll_errors > 0
        shared.down = False
        for _ in range(200):
            if await b.lookup(SECRET) is None:
                break
            await asyncio.sleep(0.005)
        assert await b.lookup(SECRET) is None  # a announced it as soon as it could: b dropped the key
        assert b.health()[0] == "ok"
    finally:
        for c in (a, b):
            c.stop_watching()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=1)


async def test_a_key_not_cached_while_the_database_is_away_is_a_503_not_a_500_or_a_401() -> None:
    class Away(Store):
        async def grant_by_hash(self, key_hash: str) -> Grant | None:
            raise ConnectionRefusedError("database away")

    cache = KeyCache(Away(), MemoryKeyVersion(), ManualClock())  # type: ignore[arg-type]
    with pytest.raises(errors.Unavailable) as away:
        await cache.lookup(SECRET)
    assert away.value.status == 503 and away.value.retry_after == 1.0 and away.value.code == "store_unavailable"


@pytest.mark.parametrize(("grant", "message"), [
    (_grant(revoked=999.0), "This API key was revoked at 1970-01-01T00:16:39Z; ask the gateway's admin for a new one."),
    (_grant(expires=1000.0), "This API key expired at 1970-01-01T00:16:40Z; ask the gateway's admin to extend it"),
    (Grant(_grant().key, _grant().project, _grant().tenant, until=990.0), "its previous secret stopped working at"),
    (Grant(_grant().key, Project(id="p1", tenant_id="t1", name="p", enabled=False), _grant().tenant),
     "This API key's project is disabled; ask the gateway's admin to enable it."),
])
async def test_a_known_key_that_cannot_be_used_is_refused_with_its_reason(grant: Grant, message: str) -> None:
    """An expired or revoked key met "Invalid API key.", as a mistyped one does: its holder could not tell
    what happened, or what to ask for. A secret the gateway does not know still gets the plain refusal."""
    store = Store()
    store.grants[hash_secret(SECRET)] = grant
    cache = KeyCache(store, MemoryKeyVersion(), ManualClock())  # type: ignore[arg-type]
    auth = Authenticator("sk-master", cache.lookup, cache.cached, cache.why_refused)
    with pytest.raises(errors.AuthError, match=re.escape(message)):
        await auth.authenticate({"authorization": f"Bearer {SECRET}"})
    with pytest.raises(errors.AuthError, match=r"^Invalid API key\.$"):
        await auth.authenticate({"authorization": f"Bearer {new_secret()}"})


async def test_a_redis_that_comes_back_empty_cannot_hide_a_revoke(redis_isolated: tuple[str, str]) -> None:
    """Redis restarted without persistence: its version counter starts again from nothing. A revoke announced
    then (the bump owed through the outage, say) can bring it back to the very number a replica saw before,
    and that replica must still drop its cache: else the revoked key lives there until the next change."""
    from aigw.stores.redis.client import make_redis
    from aigw.stores.redis.counters import RedisKeyVersion

    url, prefix = redis_isolated
    redis = make_redis(url, socket_timeout_s=2.0)
    try:
        version = RedisKeyVersion(redis, prefix)
        await version.bump()  # one change made since the deployment began: version 1
        store = Store()
        store.grants[hash_secret(SECRET)] = _grant()
        cache = KeyCache(store, version, ManualClock())  # type: ignore[arg-type]
        await cache.check_version()
        assert await cache.lookup(SECRET) is not None
        await redis.delete(prefix + "keys:version")  # Redis came back empty (as a restart without persistence)
        store.grants[hash_secret(SECRET)] = _grant(revoked=999.0)  # revoked in the database meanwhile...
        await version.bump()  # ...and announced: counting from 0 again, it read 1 once more
        await cache.check_version()
        assert await cache.lookup(SECRET) is None
    finally:
        await redis.aclose()


async def test_an_open_gateway_refuses_a_revoked_key_whose_lookup_raced_a_change() -> None:
    """The revoked key's row is read while the version moves (a change elsewhere): the row is not cached, but
    its refusal must still be known, or an open gateway lets the key in as the caller without a key."""
    store = Store()
    store.grants[hash_secret(SECRET)] = _grant(revoked=999.0)
    store.gate = asyncio.Event()
    cache = KeyCache(store, MemoryKeyVersion(), ManualClock())  # type: ignore[arg-type]
    auth = Authenticator("", cache.lookup, cache.cached, cache.why_refused)
    pending = asyncio.get_running_loop().create_task(auth.authenticate({"authorization": f"Bearer {SECRET}"}))
    await asyncio.sleep(0)
    cache.invalidate()  # another key, project or tenant changed meanwhile
    store.gate.set()
    with pytest.raises(errors.AuthError, match="revoked"):
        await pending


async def test_calls_that_meet_an_uncached_key_together_read_it_once() -> None:
    """After a version move every replica meets its busy keys uncached at once: the calls of one key wait for
    one read of it, not one read each (a pool of database connections drained by a single key)."""
    store = Store()
    store.grants[hash_secret(SECRET)] = _grant()
    store.gate = asyncio.Event()
    cache = KeyCache(store, MemoryKeyVersion(), ManualClock())  # type: ignore[arg-type]
    calls = [asyncio.get_running_loop().create_task(cache.lookup(SECRET)) for _ in range(20)]
    await asyncio.sleep(0.01)
    store.gate.set()
    assert all(p is not None for p in await asyncio.gather(*calls))
    assert store.reads == 1


async def test_a_call_after_a_change_does_not_wait_for_a_read_begun_before_it() -> None:
    # the read in flight may hold the key as it was (not yet revoked): a call that comes after the change reads
    # again, so a revoke is never hidden by sharing an older read
    store = Store()
    store.grants[hash_secret(SECRET)] = _grant()
    store.gate = asyncio.Event()
    cache = KeyCache(store, MemoryKeyVersion(), ManualClock())  # type: ignore[arg-type]
    before = asyncio.get_running_loop().create_task(cache.lookup(SECRET))
    await asyncio.sleep(0)
    store.grants[hash_secret(SECRET)] = _grant(revoked=1.0)
    cache.invalidate()  # the version moved: the key was revoked
    after = asyncio.get_running_loop().create_task(cache.lookup(SECRET))
    await asyncio.sleep(0)
    store.gate.set()
    await before  # what its own read found, as before any sharing
    assert await asyncio.wait_for(after, 1) is None and store.reads == 2


async def test_a_call_cancelled_while_reading_a_key_does_not_fail_the_others() -> None:
    store = Store()
    store.grants[hash_secret(SECRET)] = _grant()
    store.gate = asyncio.Event()
    cache = KeyCache(store, MemoryKeyVersion(), ManualClock())  # type: ignore[arg-type]
    first = asyncio.get_running_loop().create_task(cache.lookup(SECRET))
    await asyncio.sleep(0)
    other = asyncio.get_running_loop().create_task(cache.lookup(SECRET))
    await asyncio.sleep(0)
    first.cancel()  # its client went away
    await asyncio.sleep(0)
    store.gate.set()
    assert await asyncio.wait_for(other, 1) is not None


async def test_calls_waiting_on_a_read_that_fails_are_answered_503_with_it() -> None:
    class Failing(Store):
        async def grant_by_hash(self, key_hash: str) -> Grant | None:
            self.reads += 1
            await asyncio.sleep(0.01)
            raise ConnectionError("database away")

    store = Failing()
    cache = KeyCache(store, MemoryKeyVersion(), ManualClock())  # type: ignore[arg-type]
    calls = [cache.lookup(SECRET) for _ in range(5)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(o, errors.Unavailable) for o in outcomes) and store.reads == 1


async def test_an_unknown_secret_costs_one_read_and_a_key_created_after_the_miss_works_at_once() -> None:
    """A client retrying a wrong secret reads the store once (the miss is remembered until the version moves);
    a key created after that miss works on its first request (its secret is new: no miss can name it)."""
    store, version = Store(), MemoryKeyVersion()
    cache = KeyCache(store, version, ManualClock())  # type: ignore[arg-type]
    auth = Authenticator("sk-master", cache.lookup, cache.cached)
    wrong = new_secret()
    for _ in range(50):
        with pytest.raises(errors.AuthError, match="Invalid API key"):
            await auth.authenticate({"authorization": f"Bearer {wrong}"})
    assert store.reads == 1
    store.grants[hash_secret(SECRET)] = _grant()  # created now, through another worker: no version move
    assert (await auth.authenticate({"authorization": f"Bearer {SECRET}"})).key_id == "k1"
    assert store.reads == 2


async def test_the_follow_up_of_a_version_move_starts_after_the_keys_are_dropped() -> None:
    """``on_move`` (the budget reseed of workers without Redis) may take a second: a revoked key must not
    keep working meanwhile, so the cache is dropped before it is told."""
    store, version = Store(), MemoryKeyVersion()
    store.grants[hash_secret(SECRET)] = _grant()
    seen: list[object] = []
    cache = KeyCache(store, version, ManualClock(), on_move=lambda: seen.append(cache.cached(SECRET)))  # type: ignore[arg-type]
    await cache.check_version()
    assert await cache.lookup(SECRET) is not None and cache.cached(SECRET) is not None
    store.grants[hash_secret(SECRET)] = _grant(revoked=999.0)
    await version.bump()
    await cache.check_version()
    assert seen == [None]  # told once, with the revoked key already gone from memory
    assert await cache.lookup(SECRET) is None
