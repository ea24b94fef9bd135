"""The durable store's SQL surface on SQLite: one connection in WAL mode on its own thread.

One connection is enough for the embedded gateway: the ledger writes in batches,
and the request path never touches the database (keys are cached in memory).
``aigw.sqlite_thread`` owns the connection and its thread; this adds the ``Sql``
methods and transactions. ``run`` hands a whole unit of work to the thread in
one hop: the ledger writes each batch that way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

from aigw.sqlite_child import WAL_PRAGMAS
from aigw.sqlite_thread import SqliteThread
from aigw.stores.sql import Row

T = TypeVar("T")


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
        self._db = SqliteThread(path, (*WAL_PRAGMAS, "PRAGMA foreign_keys=ON"), row_factory=sqlite3.Row)

    async def open(self) -> None:
        await self._db.open()

    @property
    def conn(self) -> sqlite3.Connection:
        return self._db.conn

    async def close(self) -> None:
        await self._db.close()

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` on the database thread, in one hop, with no other statement between."""
        return await self._db.run(work)

    async def execute(self, sql: str, *args: Any) -> None:
        await self._db.run(partial(_execute, sql=sql, args=args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._db.run(partial(_executemany, sql=sql, rows=rows))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._db.run(partial(_fetch, sql=sql, args=args))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        async with self._db.lock:
            await self._db.call(_execute, self.conn, "BEGIN IMMEDIATE", ())
            try:
                yield _Tx(self._db)
            except BaseException:
                await self._db.call(_execute, self.conn, "ROLLBACK", ())
                raise
            await self._db.call(_execute, self.conn, "COMMIT", ())


class _Tx:
    """The connection inside a transaction (the lock is already held)."""

    dialect = "sqlite"
    in_transaction = True

    def __init__(self, db: SqliteThread) -> None:
        self._db = db

    async def execute(self, sql: str, *args: Any) -> None:
        await self._db.call(_execute, self._db.conn, sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._db.call(_executemany, self._db.conn, sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._db.call(_fetch, self._db.conn, sql, args)

    def transaction(self) -> Any:
        raise RuntimeError("nested transactions are not supported")


def _execute(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> None:
    conn.execute(sql, args)


def _executemany(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    conn.executemany(sql, rows)


def _fetch(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[Row]:
    return [dict(r) for r in conn.execute(sql, args).fetchall()]
