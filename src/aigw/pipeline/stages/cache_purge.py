"""Purging the response cache: an admin purge, and the purges other processes announce.

An admin purge (``DELETE /admin/cache``) deletes a tenant's and/or a model's
entries and semantic buckets from every backend, this process's near copies
included. What only another process holds (its memory store and index, its near
copies of shared entries) that process drops itself when it reads the purge in
the purge log (``stores/purge_log.py``), which ``watch`` polls a few times a
second. The cache stage owns one ``Purger`` and hands it what it keeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aigw.pipeline.stages.cache_guard import CacheStats
from aigw.pipeline.stages.cache_keys import purge_patterns, taken_out_of_service
from aigw.pipeline.stages.cache_near import NearCache
from aigw.stores.cache_base import CacheStore, SemanticIndex
from aigw.stores.purge_log import Purge, PurgeLog
from aigw.supervise import Supervisor

log = logging.getLogger("aigw.cache")


class PurgeFailed(Exception):
    """A backend (or the purge log) failed during a purge; what was deleted until then, by backend, is in ``done``."""

    def __init__(self, backend: str, cause: BaseException, done: dict[str, int]) -> None:
        super().__init__(f"{backend}: {type(cause).__name__}")
        self.backend = backend
        self.done = done


class Purger:
    def __init__(self, stores: dict[str, CacheStore], indexes: dict[str, SemanticIndex], near: dict[str, NearCache],
                 stats: CacheStats, flush: Callable[[], Awaitable[None]], supervisor: Supervisor,
                 purge_log: PurgeLog | None = None, poll_s: float = 0.25) -> None:
        self.stores = stores
        self.indexes = indexes
        self.near = near
        self.stats = stats
        self.flush = flush  # the stage's stores still in flight: an answer sent before a purge never outlives it
        self.supervisor = supervisor
        self.purge_log = purge_log  # None: no other process keeps entries of its own
        self.poll_s = poll_s
        self.watch_errors = 0
        self._in_process = {name: bool(getattr(store, "in_process", False)) for name, store in stores.items()}
        self._announced: set[str] = set()  # ids of this process's own purges in the log (already done here)
        self._task: asyncio.Task[None] | None = None
        self._watching = False

    async def purge(self, tenant: str | None, model: str | None = None) -> dict[str, int]:
        """Delete the entries and semantic buckets of ``tenant`` and/or ``model`` (None and None: all) from
        every backend, this process's near copies included; answers taken out of service per backend
        (``taken_out_of_service``: an answer and the mark beside it count once). Answers finished
        before the call are stored first, so none of them lands after it (one still upstream may)."""
        done = await self._purge_here(purge_patterns(tenant, model), shared=True)
        self.stats.purged += sum(done.values())
        if self.purge_log is not None:  # the other processes drop their own copies (``watch``)
            try:
                self._announced.add(await self.purge_log.announce(tenant, model))
            except Exception as exc:
                raise PurgeFailed("purge log", exc, done) from exc
        return done

    async def _drop_own_copies(self, purge: Purge) -> None:
        """Another process's purge: what only this process holds goes (its memory stores and indexes, its
        near copies of shared entries); the shared backends were purged by the process that took the call."""
        dropped = sum((await self._purge_here(purge_patterns(purge.tenant, purge.model), shared=False)).values())
        self.stats.purged += dropped
        log.info("cache purge announced by another process: tenant=%s model=%s dropped=%d here",
                 purge.tenant or "*", purge.model or "*", dropped)

    async def _purge_here(self, patterns: list[str] | None, shared: bool) -> dict[str, int]:
        """Near copies always; the backends in process memory; the shared ones too when ``shared``."""
        await self.flush()
        done: dict[str, int] = {}
        counts = taken_out_of_service(patterns)
        for name, store in self.stores.items():
            near = self.near.get(name)
            if near is not None:
                near.purge(patterns)
            own = getattr(store, "purge_local", None)  # a worker's own copies of its parent's entries
            if not shared and not self._in_process[name] and own is None:
                continue
            index = self.indexes.get(name)
            if not shared and index is not None and not getattr(index, "in_process", True):
                index = None  # the workers' parent's (``semantic_hosted``): the purge's own worker emptied it
            try:
                done[name] = await (store.purge if shared or own is None else own)(patterns, counts)
                if index is not None:
                    await index.purge(patterns)
            except Exception as exc:
                raise PurgeFailed(name, exc, done) from exc
            if near is not None:  # again: a hit during the purge may have copied an entry it then deleted
                near.purge(patterns)
        return done

    async def watch(self) -> None:
        """Apply the purges other processes announce, every ``poll_s``, until stopped or cancelled."""
        purge_log = self.purge_log
        if purge_log is None:
            return
        self._watching = True
        cursor: str | None = None
        while self._watching:
            try:
                if cursor is None:
                    cursor = await purge_log.head()  # purges before this process started touched nothing of its own
                else:
                    _, purges = await purge_log.since(cursor)
                    for purge in purges:
                        if purge.id in self._announced:
                            self._announced.discard(purge.id)
                        else:
                            await self._drop_own_copies(purge)
                        cursor = purge.after  # applied: a failure above leaves it to be read again
            except Exception as exc:  # a Redis blip, a bad line or a failed drop: try again at the next turn
                self.watch_errors += 1
                if self.watch_errors % 40 == 1:
                    log.warning("cache purges from the log not applied yet, trying again (%s: %s)",
                                type(exc).__name__, exc)
            await asyncio.sleep(self.poll_s)

    async def start(self) -> None:
        if self.purge_log is not None and self._task is None:
            self._task = self.supervisor.spawn(self.watch(), name="cache-purge-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._watching = False  # a cancel alone can be lost inside a Redis call
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
