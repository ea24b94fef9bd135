"""Virtual-key lookup for auth: a memory cache in front of the database, kept fresh.

The request path costs one dict lookup: a key seen since the cache was last
cleared is found by the secret as presented, else by its SHA-256; the database
is read only the first time a replica sees a key. Every change to a key, project or
tenant bumps a version counter (in Redis when configured, else in the
database); each replica polls it every ``key_refresh_s`` (0.25 s by default)
and drops its cache when it moves, so a revoked key stops working on every
replica within about that interval. Expiry is checked on every use.

A secret that is not the shape of our keys is never read. A well-formed one no entry holds is read through the
``KeyFilter`` (``key_filter.py``): a flood of made-up keys costs a bounded number of reads. A key this
replica held before the cache was last dropped is read without asking it (all of them at once, just after
a version move, are no flood).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from aigw import errors
from aigw.http.key_filter import KeyFilter
from aigw.pipeline.context import Principal
from aigw.pipeline.tenancy import scopes_of
from aigw.stores.base import Grant, KeyVersion, TenancyStore
from aigw.stores.keygen import hash_secret, well_formed
from aigw.types import Clock

log = logging.getLogger("aigw.auth")


def principal_for(grant: Grant) -> Principal:
    k = grant.key
    return Principal(
        key_id=k.id, key_prefix=k.prefix, tenant_id=k.tenant_id, project_id=k.project_id,
        is_admin=k.role == "tenant_admin",  # an admin of its own tenant only (tenant_id is set)
        allowed_models=frozenset(k.allowed_models) if k.allowed_models is not None else None,
        extra={"grant": grant, "role": k.role, "metadata": k.metadata,
               "scopes": {"rate": scopes_of(grant, "rate"), "budget": scopes_of(grant, "budget")}},
    )


def _unavailable() -> errors.Unavailable:
    return errors.Unavailable("API keys cannot be checked right now (store unavailable); retry shortly.",
                              retry_after=1.0, code="store_unavailable")


def _at(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def refusal(grant: Grant, now: float) -> str:
    """Why a key that exists cannot be used now, and what to do: said to its holder, who has the secret and
    otherwise met the same "Invalid API key." as a mistyped one, with nothing to tell an admin."""
    k = grant.key
    admin = "ask the gateway's admin"
    if k.revoked_at is not None:
        return f"This API key was revoked at {_at(k.revoked_at)}; {admin} for a new one."
    if grant.until is not None and grant.until <= now:
        return (f"This API key was rotated; its previous secret stopped working at {_at(grant.until)}. "
                "Use the new secret.")
    if k.expires_at is not None and k.expires_at <= now:
        return f"This API key expired at {_at(k.expires_at)}; {admin} to extend it or for a new one."
    for what, enabled in (("API key", k.enabled), ("API key's project", grant.project.enabled),
                          ("API key's tenant", grant.tenant.enabled)):
        if not enabled:
            return f"This {what} is disabled; {admin} to enable it."
    return "Invalid API key."


class KeyCache:
    def __init__(self, store: TenancyStore, version: KeyVersion, clock: Clock, refresh_s: float = 0.25,
                 max_size: int = 100_000, on_move: Callable[[], None] | None = None,
                 key_filter: KeyFilter | None = None) -> None:
        self._store = store
        self.filter = key_filter  # None: every well-formed secret not held is read (tests of the cache alone)
        # the hashes of keys held before the cache was last dropped: read again without asking the filter
        self._known: set[str] = set()
        # told when the version moves (a change made here or by another process), once the cache is dropped: it
        # starts what the change means for this process's own state (budget counters) and returns at once.
        # Never awaited before the drop: a revoked key must stop within a poll, however long that work takes.
        self._on_move = on_move
        self._version = version
        self._clock = clock
        self._refresh_s = refresh_s
        self._max = max_size
        self._cache: OrderedDict[str, tuple[Grant, Principal] | None] = OrderedDict()
        # The entries of keys in use by the secret as presented: no SHA-256 per request (the process
        # holds each secret in its request headers anyway). Cleared with the cache, never stale.
        self._presented: dict[str, tuple[Grant, Principal]] = {}
        self._seen_version: int | None = None
        self._generation = 0  # bumped on every invalidation; a lookup begun earlier does not cache
        # ...but the entry it read still tells ``why_refused``, asked right after ``lookup`` with no await between:
        # else an open gateway took a revoked key whose read raced a change for a secret it does not know
        self._uncached: tuple[str, tuple[Grant, Principal] | None] | None = None
        # the keys being read from the database now, each with the cache generation its read began in: the calls
        # that meet one meanwhile, in the same generation, wait for that read
        self._reading: dict[str, tuple[asyncio.Future[tuple[tuple[Grant, Principal] | None, bool]], int]] = {}
        self.poll_errors = 0
        self.failing_since: float | None = None  # when the version poll began to fail (None: it answers)
        self._watching = False
        self._bump_owed = False  # a change this replica saved but could not announce: ``watch`` retries it

    async def lookup(self, presented: str) -> Principal | None:
        if not well_formed(presented):  # no key of ours: nothing to read
            return None
        digest = hash_secret(presented)
        while digest not in self._cache:
            joined = self._reading.get(digest)
            if joined is None or joined[1] != self._generation:  # none, or begun before a change: not ours to use
                if (self.filter is not None and digest not in self._known
                        and not await self.filter.admits(digest)):
                    return None  # no key (the filter's set says so): nothing read, nothing cached
                return self._usable(await self._read(digest))
            reading = joined[0]
            # another call reads this key already (a busy key just after the version moved): its answer is ours,
            # one database read for all of them
            try:
                entry, answered = await asyncio.shield(reading)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not reading.cancelled() or (current is not None and current.cancelling()):
                    raise  # this call was cancelled, not the read
                continue  # the call that read went away first: read again
            if not answered:
                raise _unavailable()
            return self._usable(entry)
        return self._usable(self._cache[digest])

    async def _read(self, digest: str) -> tuple[Grant, Principal] | None:
        """The key of ``digest`` from the database, cached unless the cache was dropped meanwhile; the calls
        that meet the key while it is read wait for this read."""
        reading: asyncio.Future[tuple[tuple[Grant, Principal] | None, bool]] = (
            asyncio.get_running_loop().create_future())
        generation = self._generation
        self._reading[digest] = (reading, generation)
        try:
            grant = await self._store.grant_by_hash(digest)
        except asyncio.CancelledError:
            reading.cancel()
            raise
        except Exception as exc:  # the database is away: a key not cached yet cannot be told apart
            log.warning("key lookup failed (%s: %s)", type(exc).__name__, exc)
            reading.set_result((None, False))
            raise _unavailable() from None
        finally:
            if (joined := self._reading.get(digest)) is not None and joined[0] is reading:
                del self._reading[digest]
        entry = (grant, principal_for(grant)) if grant is not None else None
        if generation == self._generation:
            self._cache[digest] = entry
            if len(self._cache) > self._max:
                self._cache.popitem(last=False)
            self._uncached = None
        else:
            self._uncached = (digest, entry)
        reading.set_result((entry, True))
        return entry

    def cached(self, presented: str) -> Principal | None:
        """``lookup`` from memory only: None when the key is not held (or not usable now), so the caller
        asks ``lookup``, which reads the store or gives the refusal."""
        entry = self._presented.get(presented)
        if entry is None:
            if not well_formed(presented):
                return None
            entry = self._cache.get(hash_secret(presented))
            if entry is None:
                return None
            if len(self._presented) >= self._max:
                self._presented.clear()
            self._presented[presented] = entry
        return self._usable(entry)

    def _usable(self, entry: tuple[Grant, Principal] | None) -> Principal | None:
        """The key's caller, unless it is unknown, revoked, disabled or expired (checked on every use)."""
        if entry is None or not entry[0].usable(self._clock.now()):
            return None
        return entry[1]

    def why_refused(self, presented: str) -> str | None:
        """The reason a key ``lookup`` just refused exists but is unusable (revoked, expired, disabled), from
        memory; None for a secret the gateway does not know."""
        if not well_formed(presented):
            return None
        digest = hash_secret(presented)
        entry = self._cache.get(digest)
        if entry is None and self._uncached is not None and self._uncached[0] == digest:
            entry = self._uncached[1]
        return refusal(entry[0], self._clock.now()) if entry is not None else None

    def invalidate(self) -> None:
        held = {digest for digest, entry in self._cache.items() if entry is not None}
        known = self._known | held
        self._known = known if len(known) <= self._max else held
        self._generation += 1
        self._cache.clear()
        self._presented.clear()

    async def check_version(self) -> None:
        version = await self._version.get()
        if version != self._seen_version:
            moved = self._seen_version is not None
            if moved:
                log.debug("key version %s -> %s: cache cleared", self._seen_version, version)
            self._seen_version = version
            self.invalidate()
            if moved and self._on_move is not None:
                self._on_move()

    def health(self) -> tuple[str, str]:
        """For /health/ready: degraded while the version poll fails (a key revoked, rotated or disabled through
        another replica is not seen here meanwhile: its cached entry still serves), ok otherwise."""
        if self.failing_since is None:
            return "ok", f"key version polled every {self._refresh_s:g} s"
        return "degraded", (f"key version poll failing for {self._clock.now() - self.failing_since:.1f} s "
                            f"({self.poll_errors} failed polls): changes made through other replicas are not "
                            "seen here until it answers")

    def stop_watching(self) -> None:
        """Make ``watch`` return at its next turn (a cancel alone can be lost inside a Redis call)."""
        self._watching = False

    def owe_bump(self) -> None:
        """A change is saved but the version could not be bumped (the store was away): the watch bumps it as
        soon as it can, so the other replicas drop their cached keys even if nobody repeats the call."""
        self._bump_owed = True

    async def watch(self) -> None:
        """Poll the version until stopped or cancelled (started by app.py under the supervisor)."""
        self._watching = True
        while self._watching:
            try:
                if self._bump_owed:
                    await self._version.bump()
                    self._bump_owed = False
                    log.info("key version bumped: a change made while the store was away is announced now")
                await self.check_version()
                self.failing_since = None
            except Exception as exc:  # a store blip: keep serving the cache, try again
                self.poll_errors += 1
                if self.failing_since is None:
                    self.failing_since = self._clock.now()
                if self.poll_errors % 40 == 1:
                    log.warning("key version check failed (%s: %s)", type(exc).__name__, exc)
            await asyncio.sleep(self._refresh_s)
