"""SQLite on one connection in WAL mode, owned by one thread; statements serialised by a lock.

One connection is enough for the embedded gateway: the ledger writes in batches,
and the request path never touches the database (keys are cached in memory).
The connection lives on its own thread so the event loop never waits on disk;
the lock keeps a transaction's statements together on it.

``run`` hands a whole unit of work (a function of the connection) to that
thread in one hop. The ledger writes each batch that way: one wake-up of the
thread and one answer back, instead of a round trip per statement, which on a
busy single core was most of what a ledger write cost the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from aigw.stores.sql import Row

T = TypeVar("T")
_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=5000",
            "PRAGMA foreign_keys=ON")


def path_of(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``, ``sqlite:////abs.db`` -> ``/abs.db``, ``sqlite://:memory:``."""
    rest = url.removeprefix("sqlite:")
    if rest.startswith("///"):
        return rest[3:]
    return rest.removeprefix("//") or ":memory:"


class SqliteSql:
    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aigw-sqlite")
        self._conn = await self._call(self._connect)

    def _connect(self) -> sqlite3.Connection:
        # Made and used only on the one database thread; check_same_thread stays on as a guard.
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        for pragma in _PRAGMAS:
            conn.execute(pragma)
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            raise RuntimeError("database is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def close(self) -> None:
        if self._thread is None:
            return
        async with self._lock:
            if self._conn is not None:
                await self._call(self._conn.close)
                self._conn = None
            self._thread.shutdown(wait=True)
            self._thread = None

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` on the database thread, in one hop, with no other statement between."""
        async with self._lock:
            return await self._call(work, self.conn)

    async def execute(self, sql: str, *args: Any) -> None:
        async with self._lock:
            await self._call(_execute, self.conn, sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self._lock:
            await self._call(_executemany, self.conn, sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._lock:
            return await self._call(_fetch, self.conn, sql, args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        async with self._lock:
            await self._call(_execute, self.conn, "BEGIN IMMEDIATE", ())
            try:
                yield _Tx(self)
            except BaseException:
                await self._call(_execute, self.conn, "ROLLBACK", ())
                raise
            await self._call(_execute, self.conn, "COMMIT", ())


class _Tx:
    """The connection inside a transaction (the lock is already held)."""

    dialect = "sqlite"
    in_transaction = True

    def __init__(self, db: SqliteSql) -> None:
        self._db = db

    async def execute(self, sql: str, *args: Any) -> None:
        await self._db._call(_execute, self._db.conn, sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._db._call(_executemany, self._db.conn, sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._db._call(_fetch, self._db.conn, sql, args)

    def transaction(self) -> Any:
        raise RuntimeError("nested transactions are not supported")


def _execute(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> None:
    conn.execute(sql, args)


def _executemany(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    conn.executemany(sql, rows)


def _fetch(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[Row]:
    return [dict(r) for r in conn.execute(sql, args).fetchall()]
