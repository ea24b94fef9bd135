"""PostgreSQL through an asyncpg pool. ``?`` placeholders become ``$n`` once per statement.

Unknown query parameters of the URL (e.g. ``?search_path=aigw``) are passed to
the server as settings, which is how tests give each run its own schema.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import asyncpg

from aigw.stores.sql import Row

CLOSE_TIMEOUT_S = 5.0  # a graceful pool close past this is cut (terminate)


@lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


class PostgresSql:
    dialect = "postgres"

    def __init__(self, dsn: str, min_size: int = 1, max_size: int = 8, timeout_s: float = 5.0) -> None:
        self.dsn = dsn
        self._min, self._max, self._timeout = min_size, max_size, timeout_s
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self.dsn, min_size=self._min, max_size=self._max,
                                               timeout=self._timeout, command_timeout=30)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("database is not open")
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:  # a server that stopped answering never completes a graceful close: do not hang the shutdown
                await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
            except Exception:
                pool.terminate()

    async def execute(self, sql: str, *args: Any) -> None:
        await self.pool.execute(numbered(sql), *args, timeout=self._timeout)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.pool.executemany(numbered(sql), rows, timeout=self._timeout)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(r) for r in await self.pool.fetch(numbered(sql), *args, timeout=self._timeout)]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgConn]:
        async with self.pool.acquire(timeout=self._timeout) as conn, conn.transaction():
            yield PgConn(conn)


class PgConn:
    """One pooled connection (inside a transaction)."""

    dialect = "postgres"
    in_transaction = True

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self.conn.execute(numbered(sql), *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.conn.executemany(numbered(sql), rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(r) for r in await self.conn.fetch(numbered(sql), *args)]

    def transaction(self) -> Any:
        raise RuntimeError("nested transactions are not supported")
