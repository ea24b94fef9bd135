"""Recent entries of a shared cache backend (Redis), kept in this process for a few seconds.

A hit served from Redis pays a network round trip: on a busy core about as much
CPU as the rest of the hit. The same question asked again on this replica within
``near_ttl_s`` is answered from here instead, like LiteLLM's in-memory layer in
front of Redis. Entries never change once written (a key is a hash of the
question), so the only staleness is an entry that expired in Redis: each copy
here expires at the entry's own TTL when the entry records it, and never later
than ``near_ttl_s`` after it was read or written. Bounded by bytes; cleared
whole when full. A purge also counts as a new ``epoch``: a read that began before
it (and may have fetched an entry the purge then deleted) is not kept.
"""

from __future__ import annotations

from aigw.stores.key_glob import matcher
from aigw.types import Clock


class NearCache:
    def __init__(self, ttl_s: float, max_bytes: int, clock: Clock) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.clock = clock
        self._items: dict[str, tuple[float, bytes]] = {}
        self._held = 0
        self.hits = 0
        self.epoch = 0  # purges so far: ``put(..., epoch=...)`` of a read begun before the latest one is dropped

    def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= self.clock.now():
            del self._items[key]
            self._held -= len(item[1])
            return None
        self.hits += 1
        return item[1]

    def put(self, key: str, value: bytes, expires_at: float | None, epoch: int | None = None) -> None:
        """Keep ``value`` until ``expires_at`` (the entry's own end, if known) or ``ttl_s`` from now;
        ``epoch``: ``self.epoch`` when the read that found ``value`` began (a purge since: not kept)."""
        if epoch is not None and epoch != self.epoch:
            return  # a purge ran while it was read: the entry may be gone from the backend
        if len(value) > self.max_bytes // 16:
            return  # a few big answers must not push out every small one
        now = self.clock.now()
        until = now + self.ttl_s if expires_at is None else min(now + self.ttl_s, expires_at)
        if until <= now:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._held -= len(old[1])
        if self._held + len(value) > self.max_bytes:
            self._items.clear()
            self._held = 0
        self._items[key] = (until, value)
        self._held += len(value)

    def purge(self, patterns: list[str] | None) -> None:
        self.epoch += 1
        if patterns is None:
            self._items.clear()
            self._held = 0
            return
        match = matcher(patterns)
        for key in [k for k in self._items if match(k)]:
            self._held -= len(self._items.pop(key)[1])

    def __len__(self) -> int:
        return len(self._items)
