"""A worker's response cache under ``aigw serve --workers N`` without Redis: its own memory, then its parent's.

``LayeredCacheStore`` answers from the worker's own ``MemoryCacheStore`` first, without a call (a repeated
hit costs what it costs a single process); on a miss there the cache stage asks the parent's shared store
(``cache_host``) through ``get``. An answer stored by any worker is stored in both, so the next worker to be
asked finds it. A worker's copy lives ``near_ttl_s`` at most (as a near copy of a Redis entry does): an entry
another worker refreshed (``x-aigw-cache: no-cache``) is served old by this one for that long, no longer. The
parent's store is reached like Redis: bounded by the cache's ``timeout_ms``, skipped for a moment after a
failure, and a failure there never fails a request (the stage's guard).

A purge ends every worker's copies before it returns: the parent counts its purges on a page each worker maps
(``cache_host.EPOCH_FILE``), and a worker's lookup that finds the count moved drops all its copies first (it
does not know what the purge named; its next hits ask the parent once each). A memory read, no call: a hit
stays free of the socket.

The semantic index is the parent's too (``semantic_hosted``): a purge empties it once, from the worker that
took the purge; the others drop only their own copies when they read it in the purge log.
"""

from __future__ import annotations

import logging
import mmap
import os
from collections.abc import Callable

from aigw.stores.cache_host import EPOCH_BYTES, epoch_path
from aigw.stores.cache_memory import MemoryCacheStore
from aigw.stores.counter_client import HostClient

log = logging.getLogger("aigw.cache")


class PurgeEpoch:
    """The parent's count of purges, read from the page it shares (``SharedCache.publish``) with no call."""

    def __init__(self, page: mmap.mmap) -> None:
        self._page = page
        self._seen = page[:EPOCH_BYTES]

    @classmethod
    def of_host(cls, socket_path: str) -> PurgeEpoch | None:
        """The epoch of the host at ``socket_path``; None if it shows none (it keeps no cache)."""
        try:
            fd = os.open(epoch_path(socket_path), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            return cls(mmap.mmap(fd, EPOCH_BYTES, access=mmap.ACCESS_READ))
        finally:
            os.close(fd)

    def moved(self) -> bool:
        """Whether the parent purged since the last call that said so."""
        now = self._page[:EPOCH_BYTES]
        if now == self._seen:
            return False
        self._seen = now
        return True

    def close(self) -> None:
        self._page.close()


class HostedCache(HostClient):
    """The parent's shared memory store, as a cache store (``CacheStore``)."""

    name = "memory"
    in_process = False

    async def get(self, key: str) -> bytes | None:
        entry = await self.get_entry(key)
        return entry[0] if entry is not None else None

    async def get_entry(self, key: str) -> tuple[bytes, float] | None:
        """The value and the seconds it has left, or None."""
        found = await self.call("cache.get", key)
        return (found[0], found[1]) if found is not None else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self.call("cache.set", key, value, ttl_s)

    async def ping(self) -> None:
        await self.call("cache.ping")

    async def purge_keys(self, patterns: list[str] | None) -> list[str]:
        """Delete the entries matching ``patterns`` (None: all); the keys that went."""
        return list(await self.call("cache.purge", patterns))

    async def purge(self, patterns: list[str] | None, counts: Callable[[str], bool] | None = None) -> int:
        return sum(1 for key in await self.purge_keys(patterns) if counts is None or counts(key))

    async def aclose(self) -> None:
        await self.close()


class LayeredCacheStore:
    """This worker's memory, then the parent's shared store (``CacheStore``; ``get_now`` is the first level)."""

    name = "memory"
    in_process = False  # ``get``, ``set`` and ``purge`` reach the parent: they may hang, so they are timed
    layered = True  # the cache stage: ``get_now`` answers for this process alone; None there asks ``get``

    def __init__(self, local: MemoryCacheStore, shared: HostedCache, copy_ttl_s: float) -> None:
        self.local = local
        self.shared = shared
        self.copy_ttl_s = copy_ttl_s  # a worker's copy at most this long (0: none, every hit asks the parent)
        self.epoch = 0  # purges begun so far: a read of the parent begun before the latest one leaves no copy
        self.purges = PurgeEpoch.of_host(shared.path)  # the parent's purges, any worker's
        if self.purges is None:
            log.warning("the cache host at %s shows no purge epoch: a purge reaches this worker's copies only "
                        "through the purge log", shared.path)

    def get_now(self, key: str) -> bytes | None:
        self.sync()
        return self.local.get_now(key)

    def sync(self) -> int:
        """Drop every copy if the parent purged since the last look (a memory read); this worker's epoch."""
        if self.purges is not None and self.purges.moved():
            old = self.local
            self.local = MemoryCacheStore(old.max_entries, old.max_bytes, old.clock)
            self.epoch += 1
        return self.epoch

    async def get(self, key: str) -> bytes | None:
        value = self.get_now(key)
        if value is not None:
            return value
        epoch = self.epoch
        entry = await self.shared.get_entry(key)
        if entry is None:
            return None
        value, left_s = entry
        if epoch == self.sync():  # else the parent may have answered before a purge that this copy would outlive
            await self.copy(key, value, left_s)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self.copy(key, value, ttl_s)  # this worker has it even if the parent cannot be reached
        await self.shared.set(key, value, ttl_s)

    async def copy(self, key: str, value: bytes, ttl_s: float) -> None:
        """This worker's own copy alone, for ``copy_ttl_s`` at most."""
        if (ttl_s := min(ttl_s, self.copy_ttl_s)) > 0:
            self.sync()  # not into a store the parent's last purge should have emptied
            await self.local.set(key, value, ttl_s)

    async def ping(self) -> None:
        await self.shared.ping()

    async def purge(self, patterns: list[str] | None, counts: Callable[[str], bool] | None = None) -> int:
        """Both levels; an entry held in both counts once (the other workers drop their own copies when the purge
        log tells them: ``purge_local``)."""
        gone: set[str] = set()

        def note(key: str) -> bool:
            gone.add(key)
            return False
        self.epoch += 1
        await self.local.purge(patterns, note)
        gone.update(await self.shared.purge_keys(patterns))
        self.epoch += 1  # a read answered between the two purges may hold an entry the parent's purge deleted
        return sum(1 for key in gone if counts is None or counts(key))

    async def purge_local(self, patterns: list[str] | None, counts: Callable[[str], bool] | None = None) -> int:
        """This worker's own copies only: another worker's purge, which emptied the parent's store already."""
        self.epoch += 1
        return await self.local.purge(patterns, counts)

    async def aclose(self) -> None:
        if self.purges is not None:
            self.purges.close()
            self.purges = None
        await self.shared.aclose()
