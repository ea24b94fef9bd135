"""SQLite through aiosqlite: one connection in WAL mode, statements serialised by a lock.

One connection is enough for the embedded gateway: the ledger writes in batches,
and the request path never touches the database (keys are cached in memory).
The lock keeps a transaction's statements together on the shared connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite

from aigw.stores.sql import Row


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
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._in_tx = False

    async def open(self) -> None:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA busy_timeout=5000")
        await conn.execute("PRAGMA foreign_keys=ON")
        self._conn = conn

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def execute(self, sql: str, *args: Any) -> None:
        async with self._lock:
            await self.conn.execute(sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self._lock:
            await self.conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._lock:
            cursor = await self.conn.execute(sql, args)
            rows = await cursor.fetchall()
        return [dict(r) for r in rows]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        async with self._lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield _Tx(self.conn)
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            await self.conn.execute("COMMIT")


class _Tx:
    """The connection inside a transaction (the lock is already held)."""

    dialect = "sqlite"
    in_transaction = True

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self.conn.execute(sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        cursor = await self.conn.execute(sql, args)
        return [dict(r) for r in await cursor.fetchall()]

    def transaction(self) -> Any:
        raise RuntimeError("nested transactions are not supported")
