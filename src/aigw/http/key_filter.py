"""A flood of made-up keys costs the database a bounded number of reads.

A well-formed secret the key cache does not hold is read from the database while this process's budget
lasts: ``tenancy.unknown_key_reads_per_s`` reads a second, from a bucket one second deep. Past it, the
filter answers from the set of every key's hash instead, loaded once (``TenancyStore.key_hashes``) and then
kept up to date by a small read of what changed since, every ``refresh_s``; a key made or rotated on this
replica is added at once. A secret whose hash is not in the set is no key: refused with no read. One that is
there is a key, and is read as before. While the set cannot tell (its first load not done within
``LOAD_WAIT_S``, or older than ``MAX_AGE_S`` because its refresh fails), a request past the budget gets a 503
``key_lookups_throttled`` with Retry-After: 1 (at once when its last read failed). After ``idle_s`` without
the budget running out, the set is dropped and its refresh stops: a quiet gateway pays nothing for it.

The set keeps the first 64 bits of each SHA-256 as an int (about 70 bytes a key, not ~180 for the hex text):
a made-up secret matches some key's 64 bits about once in 2**64 / keys tries, and that costs one read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aigw import errors
from aigw.stores.base import TenancyStore
from aigw.types import Clock

log = logging.getLogger("aigw.auth")

THROTTLED = "key_lookups_throttled"  # the error code of a 503 past the budget while the set cannot tell
MAX_AGE_S = 1.0  # the set answers while its last read began at most this long ago: a new key works within it
LOAD_WAIT_S = 1.0  # a request past the budget waits this long at most for the set's first load
IDLE_S = 60.0  # the set is dropped after this long without the budget running out

Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]  # e.g. ``Supervisor.spawn``


def _short(key_hash: str) -> int:
    return int(key_hash[:16], 16)


def throttled() -> errors.Unavailable:
    return errors.Unavailable("Too many unknown API keys are being tried on this gateway for yours to be checked "
                              "now; retry shortly.", code=THROTTLED, retry_after=1.0)


class KeyFilter:
    def __init__(self, store: TenancyStore, clock: Clock, spawn: Spawn, reads_per_s: float,
                 refresh_s: float = 0.25, idle_s: float = IDLE_S) -> None:
        self._store = store
        self._clock = clock
        self._spawn = spawn
        self._rate = reads_per_s
        self._depth = max(1.0, reads_per_s) if reads_per_s > 0 else 0.0  # one second of reads (0: none)
        self._tokens = self._depth
        self._filled_at = clock.monotonic()
        self._refresh_s = refresh_s
        self._idle_s = idle_s
        self._hashes: set[int] | None = None  # None: not loaded (the budget has not run out lately)
        self._fresh_at = 0.0  # when the set's last successful read began (monotonic)
        self._since: float | None = None  # the store's mark for the next read of what changed
        self._added: set[int] | None = None  # keys made here while the set loads
        self._over_at = 0.0  # when the budget last ran out (monotonic)
        self._task: asyncio.Task[Any] | None = None
        self._closed = False  # stopped (shut down): the set is not loaded again
        self._ready = asyncio.Event()  # the set was read at least once since it was needed
        self._failing = False  # its last read failed: no request waits for the next
        self.loads = 0  # full reads of the set
        self.read_errors = 0

    @property
    def active(self) -> bool:
        """The budget ran out lately: the set is loaded (or loading) and followed."""
        return self._task is not None

    async def admits(self, key_hash: str) -> bool:
        """Whether to read the key of ``key_hash`` from the store; False: it is no key (the set says so), and
        nothing was read. Raises ``Unavailable`` (``key_lookups_throttled``) past the budget while the set
        cannot tell."""
        now = self._clock.monotonic()
        if self._take(now):
            return True
        self._over_at = now
        if self._task is None and not self._closed:
            self._task = self._spawn(self._follow(), "key-hash-set")
        hashes = self._current(now)
        if hashes is None and not self._failing:  # the first load runs: worth a short wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), LOAD_WAIT_S)
            hashes = self._current(self._clock.monotonic())
        if hashes is None:
            raise throttled()
        return _short(key_hash) in hashes

    def add(self, key_hash: str) -> None:
        """A key made or rotated on this replica: in the set at once (other replicas read it within
        ``MAX_AGE_S``)."""
        if self._hashes is not None:
            self._hashes.add(_short(key_hash))
        elif self._added is not None:
            self._added.add(_short(key_hash))

    async def stop(self) -> None:
        self._closed = True
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _take(self, now: float) -> bool:
        """One read from the budget, if there is one left."""
        self._tokens = min(self._depth, self._tokens + (now - self._filled_at) * self._rate)
        self._filled_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _current(self, now: float) -> set[int] | None:
        """The set, if it can tell: loaded, and read from the store within ``MAX_AGE_S``."""
        hashes = self._hashes
        return hashes if hashes is not None and now - self._fresh_at <= MAX_AGE_S else None

    async def _follow(self) -> None:
        """Load the set, then read what changed every ``refresh_s``, until the budget has not run out for
        ``idle_s``; then drop it."""
        try:
            while self._clock.monotonic() - self._over_at < self._idle_s:
                began = self._clock.monotonic()
                wait = self._refresh_s
                try:
                    await self._read()
                    self._fresh_at = began
                    self._failing = False
                    self._ready.set()
                except Exception as exc:  # the set ages meanwhile: past MAX_AGE_S, requests over budget get 503s
                    self.read_errors += 1
                    self._failing = True
                    if self.read_errors % 40 == 1:
                        log.warning("key hash set read failed (%s: %s)", type(exc).__name__, exc)
                    if self._hashes is None:
                        wait = max(wait, 1.0)  # a whole table's read: not four times a second into an outage
                await asyncio.sleep(wait)
        finally:
            self._hashes = self._since = self._added = None
            self._failing = False
            self._ready.clear()
            self._task = None

    async def _read(self) -> None:
        if self._hashes is None:
            if self._added is None:
                self._added = set()
            hashes, since = await self._store.key_hashes(None)
            self._hashes = {_short(h) for h in hashes} | self._added
            self._added = None
            self.loads += 1
        else:
            hashes, since = await self._store.key_hashes(self._since)
            self._hashes.update(_short(h) for h in hashes)
        self._since = since
