"""Request log stores on SQLite (embedded) and PostgreSQL (scaled), one table per UTC day.

Day tables make retention a ``DROP TABLE`` of whole days (no full-table
deletes, no vacuum storms) and keep every query on a few small tables. A page is
read newest-first with a keyset cursor ``(ts, request_id)``, walking day tables
backwards until the page is full.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections.abc import Sequence
from functools import partial
from operator import attrgetter
from typing import Any

import orjson

from aigw.observability.request_log import COLUMNS, DAY_S, RequestQuery, RequestRecord
from aigw.observability.request_log_rows import write_payload
from aigw.pg_text import pg_rows, pg_text
from aigw.sqlite_process import PriorityWriter, shareable
from aigw.sqlite_thread import SqliteThread, while_locked

PREFIX = "aigw_request_log_d"
_TABLE = re.compile(rf"^{PREFIX}(\d+)$")
_TYPES = {
    "ts": "DOUBLE PRECISION NOT NULL", "status": "INTEGER NOT NULL", "stream": "BOOLEAN NOT NULL",
    "input_tokens": "BIGINT NOT NULL", "output_tokens": "BIGINT NOT NULL", "cached_tokens": "BIGINT NOT NULL",
    "reasoning_tokens": "BIGINT NOT NULL", "cost_usd": "DOUBLE PRECISION NOT NULL",
    "latency_ms": "DOUBLE PRECISION NOT NULL", "upstream_ms": "DOUBLE PRECISION NOT NULL",
    "overhead_ms": "DOUBLE PRECISION NOT NULL", "ttft_ms": "DOUBLE PRECISION", "attempts": "INTEGER NOT NULL",
    "retries": "INTEGER NOT NULL", "request_body": "TEXT", "response_body": "TEXT", "guardrails": "TEXT",
}
_ADDED = ("guardrails",)  # nullable columns added after the first release: day tables made before get them on open
_NAMES = ", ".join(COLUMNS)


def table_for(day: int) -> str:
    return f"{PREFIX}{int(day)}"


def _tenant_index_sql(day: int) -> str:
    """A tenant's page (``tenant_id = ?``, ``ORDER BY ts DESC, request_id DESC``) read in its order from its
    first row: without it a tenant admin's listing scanned the whole day. PostgreSQL's migration 5 adds it to
    the day tables made before it; SQLite's request log file adds it on open (``_open_days``)."""
    t = table_for(day)
    return f"CREATE INDEX IF NOT EXISTS {t}_tenant ON {t} (tenant_id, ts, request_id)"


def _create_sql(day: int, table_options: str = "") -> list[str]:
    """A day table clustered by time (inserts append), with lookups by request id, by key and by tenant.

    A replayed batch is ignored by the (ts, request_id) key; a client that reuses its own
    x-request-id for a new request still gets both requests logged."""
    t = table_for(day)
    cols = ", ".join(f"{c} {_TYPES.get(c, 'TEXT NOT NULL')}" for c in COLUMNS)
    return [
        f"CREATE TABLE IF NOT EXISTS {t} ({cols}, PRIMARY KEY (ts, request_id)){table_options}",
        f"CREATE INDEX IF NOT EXISTS {t}_id ON {t} (request_id)",
        f"CREATE INDEX IF NOT EXISTS {t}_key ON {t} (key_id, ts)",
        _tenant_index_sql(day),
    ]


_VALUES = attrgetter(*COLUMNS)
_FALLBACKS = COLUMNS.index("fallbacks")
_GUARDRAILS = COLUMNS.index("guardrails")


def _row(r: RequestRecord) -> tuple[Any, ...]:
    row = list(_VALUES(r))
    row[_FALLBACKS] = orjson.dumps(r.fallbacks).decode() if r.fallbacks else "[]"
    if r.guardrails is not None:
        row[_GUARDRAILS] = orjson.dumps(r.guardrails).decode()
    return tuple(row)


def _record(row: Sequence[Any]) -> RequestRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    values["fallbacks"] = orjson.loads(values["fallbacks"] or "[]")
    values["stream"] = bool(values["stream"])
    if values["guardrails"] is not None:
        values["guardrails"] = orjson.loads(values["guardrails"])
    return RequestRecord(**values)


def _where(q: RequestQuery, ph: Any) -> tuple[str, list[Any]]:
    """The WHERE clause for ``q``; ``ph(n)`` renders the n-th placeholder (1-based)."""
    parts: list[str] = []
    args: list[Any] = []

    def add(sql: str, *values: Any) -> None:
        marks = []
        for v in values:
            args.append(v)
            marks.append(ph(len(args)))
        parts.append(sql.format(*marks))

    if q.since is not None:
        add("ts >= {}", q.since)
    if q.until is not None:
        add("ts < {}", q.until)
    if q.key_id:
        add("key_id = {}", q.key_id)
    if q.tenant_id:
        add("tenant_id = {}", q.tenant_id)
    if q.model:
        add("(model = {} OR served_model = {})", q.model, q.model)
    if q.status is not None:
        add("status = {}", q.status)
    if q.status_class is not None:
        add("status >= {} AND status < {}", q.status_class * 100, q.status_class * 100 + 100)
    if q.min_latency_ms is not None:
        add("latency_ms >= {}", q.min_latency_ms)
    if q.cursor is not None:  # a row value: the index (by time, or by tenant or key then time) starts at the cursor
        add("(ts, request_id) < ({}, {})", q.cursor[0], q.cursor[1])
    return (" WHERE " + " AND ".join(parts)) if parts else "", args


def _days_in_range(days: Sequence[int], q: RequestQuery) -> list[int]:
    lo = int(q.since // DAY_S) if q.since is not None else None
    hi = int(q.until // DAY_S) if q.until is not None else None
    if q.cursor is not None:
        hi = min(hi, int(q.cursor[0] // DAY_S)) if hi is not None else int(q.cursor[0] // DAY_S)
    return sorted((d for d in days if (lo is None or d >= lo) and (hi is None or d <= hi)), reverse=True)


def _page_sql(day: int, where: str, limit: int) -> str:
    """One day's part of a page, newest first (both stores send it; its tests explain it)."""
    return f"SELECT {_NAMES} FROM {table_for(day)}{where} ORDER BY ts DESC, request_id DESC LIMIT {int(limit)}"


CONNECT_TIMEOUT_S = 5.0  # opening the PostgreSQL request log: a silent server fails the open, not the start


class SqliteRequestLog:
    """Day tables in one SQLite file, on a connection of its own thread (``aigw.sqlite_thread``),
    written by child processes when ``background_writer`` is on (the gateway's default).

    A batch is written in one hop to that thread, in one transaction, in INSERTs of
    ``request_log_rows.ROWS_PER_INSERT`` rows: the sqlite3 module holds the GIL while it binds a
    statement's values, so short statements keep the event loop's waits short.
    """

    name = "sqlite"

    def __init__(self, path: str, background_writer: bool = False) -> None:
        self.path = path
        self._db = SqliteThread(path)
        self._days: set[int] = set()
        # Batches written by child processes (aigw.sqlite_process), so binding them never holds
        # the GIL the event loop needs; reads, day tables and retention stay on the thread.
        self._children = PriorityWriter.for_file(
            path, _WRITER, lambda payload: self._db.run(partial(write_payload, payload)), "request log",
        ) if background_writer and shareable(path) else None

    async def open(self) -> None:
        await self._db.open()
        # another worker may be indexing the days (``_upgrade_days``): a big day takes longer than the busy timeout
        self._days = await while_locked(partial(self._db.run, _open_days), self.path)

    async def write(self, records: Sequence[RequestRecord]) -> None:
        by_day: dict[int, list[tuple[Any, ...]]] = {}
        for r in records:
            by_day.setdefault(int(r.ts // DAY_S), []).append(_row(r))
        new_days = [d for d in by_day if d not in self._days]
        payload = ([sql for day in new_days for sql in _create_sql(day, " WITHOUT ROWID")], _NAMES,
                   [(table_for(day), rows) for day, rows in by_day.items()])
        if self._children is None:
            await self._db.run(partial(write_payload, payload))
        else:  # a batch the children cannot write goes to the thread (the same function)
            await self._children.write(payload)
        self._days.update(new_days)

    async def query(self, q: RequestQuery) -> list[RequestRecord]:
        where, args = _where(q, lambda n: "?")
        self._days = await self._db.run(_list_days)  # another replica may have opened a day
        days = _days_in_range(sorted(self._days), q)
        return await self._db.run(partial(_query_days, days, where, args, q.limit))

    async def get(self, request_id: str, tenant_id: str = "") -> RequestRecord | None:
        self._days = await self._db.run(_list_days)
        return await self._db.run(partial(_get, sorted(self._days, reverse=True), request_id, tenant_id))

    async def drop_before(self, day: int) -> int:
        old = [d for d in await self._db.run(_list_days) if d < day]
        await self._db.run(partial(_drop, old))
        self._days.difference_update(old)
        return len(old)

    async def ping(self) -> None:
        await self._db.run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        if self._children is not None:
            await self._children.close()
        await self._db.close()


_WRITER = "aigw.observability.request_log_rows:write_payload"


def _list_days(conn: sqlite3.Connection) -> set[int]:
    names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return {int(m.group(1)) for n in names if (m := _TABLE.match(n))}


def _open_days(conn: sqlite3.Connection) -> set[int]:
    """The day tables there are, each given the columns and the index added since it was made."""
    _upgrade_days(conn)
    return _list_days(conn)


def _upgrade_days(conn: sqlite3.Connection) -> int:
    """Give each day table the columns and the tenant index added since it was made; how many it changed."""
    changed = set()
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    for day in _list_days(conn):
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table_for(day)})")}
        for column in (c for c in _ADDED if c not in have):
            conn.execute(f"ALTER TABLE {table_for(day)} ADD COLUMN {column} {_TYPES[column]}")
            changed.add(day)
        if f"{table_for(day)}_tenant" not in indexes:
            conn.execute(_tenant_index_sql(day))
            changed.add(day)
    return len(changed)


async def upgrade_sqlite_log(path: str) -> int:
    """``aigw db upgrade`` for the request log file at ``path`` (what its open does): how many day tables it
    changed, 0 the second time."""
    db = SqliteThread(path)
    await db.open()
    try:
        return await while_locked(partial(db.run, _upgrade_days), path)
    finally:
        await db.close()


def _query_days(days: list[int], where: str, args: list[Any], limit: int,
                conn: sqlite3.Connection) -> list[RequestRecord]:
    out: list[RequestRecord] = []
    for day in days:
        out += [_record(row) for row in conn.execute(_page_sql(day, where, limit - len(out)), args)]
        if len(out) >= limit:
            break
    return out


def _get(days: list[int], request_id: str, tenant_id: str, conn: sqlite3.Connection) -> RequestRecord | None:
    for day in days:
        sql = (f"SELECT {', '.join(COLUMNS)} FROM {table_for(day)} WHERE request_id = ? "
               f"AND (? = '' OR tenant_id = ?) ORDER BY ts DESC LIMIT 1")
        row = conn.execute(sql, (request_id, tenant_id, tenant_id)).fetchone()
        if row is not None:
            return _record(row)
    return None


def _drop(days: list[int], conn: sqlite3.Connection) -> None:
    for d in days:
        conn.execute(f"DROP TABLE IF EXISTS {table_for(d)}")


_CREATE_LOCK = 0x6169_6777_726C_6F67  # "aigwrlog": the advisory lock held while a day's table is created


class PostgresRequestLog:
    name = "postgres"

    def __init__(self, dsn: str, schema: str = "") -> None:
        self.dsn = dsn
        self.schema = schema
        self._pool: Any = None
        self._days: set[int] = set()

    async def open(self) -> None:
        import asyncpg

        settings = {"search_path": self.schema} if self.schema else None
        # a connect timeout of its own: asyncpg's default (60 s, twice over with the SSL attempt first) held
        # the gateway's start two minutes on a database that accepts connections but does not answer
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4, command_timeout=10,
                                               timeout=CONNECT_TIMEOUT_S, server_settings=settings)
        self._days = await self._list_days()
        for column in _ADDED:
            rows = await self._pool.fetch(
                "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND column_name = $1 AND table_name LIKE $2", column, PREFIX + "%")
            have = {r[0] for r in rows}
            for day in (d for d in self._days if table_for(d) not in have):
                await self._pool.execute(f"ALTER TABLE {table_for(day)} ADD COLUMN IF NOT EXISTS {column} "
                                         f"{_TYPES[column]}")

    async def _list_days(self) -> set[int]:
        rows = await self._pool.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE $1",
            PREFIX + "%")
        return {int(m.group(1)) for r in rows if (m := _TABLE.match(r[0]))}

    async def write(self, records: Sequence[RequestRecord]) -> None:
        by_day: dict[int, list[tuple[Any, ...]]] = {}
        for r in records:
            by_day.setdefault(int(r.ts // DAY_S), []).append(_row(r))
        marks = ", ".join(f"${i + 1}" for i in range(len(COLUMNS)))
        async with self._pool.acquire() as conn, conn.transaction():
            for day, day_rows in by_day.items():
                rows = pg_rows(day_rows)  # a NUL in a text field (a client's model name) failed every retry
                if day not in self._days:
                    # replicas racing to create the same day's table would fail on PostgreSQL's catalog
                    # (CREATE ... IF NOT EXISTS is not safe concurrently): one at a time, till this commits
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _CREATE_LOCK)
                    for sql in _create_sql(day):
                        await conn.execute(sql)
                    self._days.add(day)
                await conn.executemany(
                    f"INSERT INTO {table_for(day)} ({_NAMES}) VALUES ({marks}) ON CONFLICT DO NOTHING",
                    rows)

    async def query(self, q: RequestQuery) -> list[RequestRecord]:
        if "\x00" in q.key_id + q.tenant_id:  # names nothing (PostgreSQL text cannot hold it)
            return []
        q = dataclasses.replace(q, model=pg_text(q.model))  # a model name's NUL is stored as U+FFFD (``write``)
        where, args = _where(q, lambda n: f"${n}")
        out: list[RequestRecord] = []
        self._days = await self._list_days()  # another replica may have opened a day
        for day in _days_in_range(sorted(self._days), q):
            sql = _page_sql(day, where, q.limit - len(out))
            out += [_record(tuple(row)) for row in await self._pool.fetch(sql, *args)]
            if len(out) >= q.limit:
                break
        return out

    async def get(self, request_id: str, tenant_id: str = "") -> RequestRecord | None:
        if "\x00" in request_id + tenant_id:  # names nothing; PostgreSQL would refuse it (a 503, not a 404)
            return None
        self._days = await self._list_days()
        for day in sorted(self._days, reverse=True):
            sql = (f"SELECT {', '.join(COLUMNS)} FROM {table_for(day)} WHERE request_id = $1 "
                   f"AND ($2 = '' OR tenant_id = $2) ORDER BY ts DESC LIMIT 1")
            row = await self._pool.fetchrow(sql, request_id, tenant_id)
            if row is not None:
                return _record(tuple(row))
        return None

    async def drop_before(self, day: int) -> int:
        old = [d for d in await self._list_days() if d < day]
        for d in old:
            await self._pool.execute(f"DROP TABLE IF EXISTS {table_for(d)}")
            self._days.discard(d)
        return len(old)

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
