"""In-process response cache: LRU bounded by entry count and total bytes, with TTLs.

Values are bytes, so the byte bound is exact and a hit can never hand out a
dict someone else may change. Everything runs on the event loop: no locks.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

from aigw.stores.key_glob import matcher
from aigw.types import Clock, SystemClock

PURGE_CHUNK = 5000


class MemoryCacheStore:
    name = "memory"
    in_process = True

    def __init__(self, max_entries: int, max_bytes: int, clock: Clock | None = None) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock or SystemClock()
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # key -> (expires_at, value)
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    def get_now(self, key: str) -> bytes | None:
        """``get`` without a coroutine: the cache stage's hit path calls this directly."""
        item = self._items.get(key)
        if item is None:
            return None
        expires_at, value = item
        if expires_at <= self.clock.now():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return value

    def get_entry(self, key: str) -> tuple[bytes, float] | None:
        """``get_now`` with the seconds the entry has left: another process's copy of it ends when it does."""
        value = self.get_now(key)
        if value is None:
            return None
        return value, self._items[key][0] - self.clock.now()

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        size = _size(key, value)
        if size > self.max_bytes:
            return
        if key in self._items:
            self._drop(key)
        self._items[key] = (self.clock.now() + ttl_s, value)
        self.bytes += size
        while len(self._items) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._items))
            self._drop(oldest)
            self.evictions += 1

    async def ping(self) -> None:
        return None

    async def purge(self, patterns: list[str] | None, counts: Callable[[str], bool] | None = None) -> int:
        """Every key matching ``patterns`` goes; those ``counts`` accepts (all, without it) are counted.
        In chunks of ``PURGE_CHUNK`` keys with a loop turn between them: a big store (100k entries
        take ~75 ms on the bench VM) must not stall the requests in flight. Entries written meanwhile
        may stay, as with Redis's SCAN."""
        match = matcher(patterns) if patterns is not None else None
        keys = list(self._items)
        gone = 0
        for start in range(0, len(keys), PURGE_CHUNK):
            if start:
                await asyncio.sleep(0)
            for key in keys[start:start + PURGE_CHUNK]:
                if key in self._items and (match is None or match(key)):
                    self._drop(key)
                    if counts is None or counts(key):
                        gone += 1
        return gone

    def _drop(self, key: str) -> None:
        _, value = self._items.pop(key)
        self.bytes -= _size(key, value)


def _size(key: str, value: bytes) -> int:
    return len(key) + len(value) + 64  # rough per-entry overhead, so tiny values still count
