"""One SQLite connection owned by one thread, and a way to hand it whole units of work.

The event loop never waits on disk: every statement runs on the connection's own
thread. ``run`` takes a function of the connection and runs it there in one hop
(one wake-up of the thread, one answer back), so a batch write of several
statements costs one round trip instead of one per statement, which on a busy
single core was most of what a write cost the loop. Calls are serialised by a
lock, so one unit of work never interleaves with another. Used by the durable
store (``stores/sqlite``) and the request log (``observability``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aigw.sqlite_child import WAL_PRAGMAS

T = TypeVar("T")
log = logging.getLogger("aigw.sqlite")
LOCKED_WAIT_S = 60.0  # how long start-up waits for a file another process holds locked


async def while_locked(step: Callable[[], Awaitable[T]], path: str) -> T:
    """``step``, tried again while another process holds the SQLite file locked, for up to ``LOCKED_WAIT_S``.
    SQLite's own busy timeout (5 s) is one try's wait; processes starting together on a busy machine (``aigw
    serve --workers N``: opening a new file, migrating it) can hold it longer, and start-up must not fail."""
    deadline = time.monotonic() + LOCKED_WAIT_S
    while True:
        try:
            return await step()
        except sqlite3.OperationalError as exc:
            if "database is locked" not in str(exc) or time.monotonic() > deadline:
                raise
            log.info("%s is locked by another process (one starting at the same time?): waiting", path)
            await asyncio.sleep(0.2)


class SqliteThread:
    def __init__(self, path: str, pragmas: Sequence[str] = WAL_PRAGMAS, row_factory: Any = None) -> None:
        self.path = path
        self._pragmas = tuple(pragmas)
        self._row_factory = row_factory
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self.lock = asyncio.Lock()

    async def open(self) -> None:
        """Connect, waiting while another process holds the file locked (``while_locked``): a worker starting
        at the same time still switching a new file to WAL makes the switch here fail at once."""
        await while_locked(self._open_once, self.path)

    async def _open_once(self) -> None:
        if self._thread is not None:  # a try before this one failed
            self._thread.shutdown(wait=False)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aigw-sqlite")
        self._conn = await self.call(self._connect)

    def _connect(self) -> sqlite3.Connection:
        # Made and used only on this one thread; check_same_thread stays on as a guard.
        conn = sqlite3.connect(self.path, isolation_level=None)
        if self._row_factory is not None:
            conn.row_factory = self._row_factory
        try:
            for pragma in self._pragmas:
                conn.execute(pragma)
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the connection's thread (the caller holds ``lock`` when it matters)."""
        if self._thread is None:
            raise RuntimeError("database is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` on the connection's thread, in one hop, with nothing else between."""
        async with self.lock:
            return await self.call(work, self.conn)

    async def close(self) -> None:
        if self._thread is None:
            return
        async with self.lock:
            if self._conn is not None:
                await self.call(self._conn.close)
                self._conn = None
            self._thread.shutdown(wait=True)
            self._thread = None
