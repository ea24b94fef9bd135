"""The response cache's entries kept by ``aigw serve --workers N``'s parent, shared by its workers.

Without Redis each worker had a memory cache of its own, so a question answered by one worker was a miss in
the others: with four workers, the same question went upstream (and was billed) up to four times. The parent
already keeps the workers' shared counters (``counter_host``); it keeps one ``MemoryCacheStore`` beside them,
reached over the same socket by ``cache_hosted.HostedCache``. Each worker still answers its repeated hits from
its own memory first (``cache_hosted.LayeredCacheStore``): the parent is asked only on a worker's miss.

The calls: ``cache.get(key)`` -> ``(value, seconds left)`` or None; ``cache.set(key, value, ttl_s)``;
``cache.purge(patterns)`` -> the keys deleted; ``cache.ping()``; and, with numpy installed, the semantic
index's (``semantic_hosted``): ``cache.index_search``, ``cache.index_add``, ``cache.index_discard``,
``cache.index_purge``.

A purge also counts up the host's purge epoch, an 8-byte page (``EPOCH_FILE``, beside the socket) that every
worker maps: a worker's lookup compares it with the last it saw, and drops all its copies when it moved (no
call: a memory read). Before, a worker dropped its copies only when it read the purge log (~0.25 s later), so
a client that purged and at once asked again could be served the purged answer by another worker.
"""

from __future__ import annotations

import importlib.util
import mmap
import os
from collections.abc import Coroutine
from typing import Any

from aigw.stores.cache_memory import MemoryCacheStore

EPOCH_FILE = "cache-epoch"  # in the host's private directory, beside its socket: the purges done, 8 bytes
EPOCH_BYTES = 8


def epoch_path(socket_path: str) -> str:
    """Where the host of the socket at ``socket_path`` keeps its purge epoch."""
    return os.path.join(os.path.dirname(socket_path), EPOCH_FILE)


class SharedCache:
    """One memory store and the calls a worker may make of it (all answered at once, on the host's loop)."""

    def __init__(self, max_entries: int, max_bytes: int, max_per_context: int) -> None:
        self.store = MemoryCacheStore(max_entries, max_bytes)
        self.index: Any = None  # the semantic index, with numpy (bounded as each process's own: cache_setup)
        if importlib.util.find_spec("numpy") is not None:
            from aigw.stores.semantic_memory import MemorySemanticIndex

            self.index = MemorySemanticIndex(max_entries, max_per_context, max_bytes=max_bytes // 4)
        self.epoch = 0  # purges done; shown to the workers on ``publish``'s page
        self._page: mmap.mmap | None = None

    def publish(self, directory: str) -> None:
        """Show the purge epoch to the workers in ``directory`` (the host's own, 0700), from now on."""
        fd = os.open(os.path.join(directory, EPOCH_FILE), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, self.epoch.to_bytes(EPOCH_BYTES, "little"))
            self._page = mmap.mmap(fd, EPOCH_BYTES)
        finally:
            os.close(fd)

    def close(self) -> None:
        page, self._page = self._page, None
        if page is not None:
            page.close()

    def answer(self, method: str, args: list[Any]) -> Any:
        if method.startswith("cache.index_") and self.index is not None:
            return self._index_call(method, args)
        store = self.store
        if method == "cache.get":
            return store.get_entry(args[0])
        if method == "cache.set":
            return _run(store.set(args[0], args[1], float(args[2])))
        if method == "cache.purge":
            gone: list[str] = []

            def note(key: str) -> bool:
                gone.append(key)
                return True
            _run(store.purge(args[0], note))
            self.epoch += 1  # after the entries went, before the purge's answer: no copy outlives its return
            if self._page is not None:
                self._page[:EPOCH_BYTES] = self.epoch.to_bytes(EPOCH_BYTES, "little")
            return gone
        if method == "cache.ping":
            return None
        raise ValueError(f"no such cache call: {method!r}")

    def _index_call(self, method: str, args: list[Any]) -> Any:
        from aigw.stores.semantic_hosted import from_wire

        index = self.index
        if method == "cache.index_search":
            match = _run(index.search(args[0], from_wire(args[1]), args[2], args[3]))
            return (match.entry_id, match.score) if match is not None else None
        if method == "cache.index_add":
            return _run(index.add(args[0], from_wire(args[1]), args[2], args[3], args[4]))
        if method == "cache.index_discard":
            return _run(index.discard(args[0], args[1]))
        if method == "cache.index_purge":
            return _run(index.purge(args[0]))
        raise ValueError(f"no such cache call: {method!r}")


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """A memory store's coroutine run to its end here: it never waits on anything. A purge's loop turns (for the
    requests of a process serving them) are not taken: the workers' other calls to the host wait for the purge
    (~75 ms per 100,000 entries on the bench VM; an admin call)."""
    try:
        while True:
            coro.send(None)
    except StopIteration as done:
        return done.value
