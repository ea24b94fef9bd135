"""Guardrail verdicts in the request log: stored and read back by every store; older day tables gain the column."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from aigw.observability.request_log import (
    COLUMNS,
    DAY_S,
    MemoryRequestLog,
    RequestLogStore,
    RequestQuery,
    RequestRecord,
)
from aigw.observability.request_log_sql import PostgresRequestLog, SqliteRequestLog, table_for

DAY = 20_000
VERDICTS = {"pii": {"action": "redact", "reasons": ["pii:email"], "counts": {"email": 2}, "score": 1.0},
            "rules": {"action": "pass", "reasons": [], "counts": {}, "score": 0.0}}


def rec(i: int, guardrails: dict[str, Any] | None) -> RequestRecord:
    return RequestRecord(request_id=f"req_{i}", ts=DAY * DAY_S + i, model="m", guardrails=guardrails)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Any) -> Callable[[], RequestLogStore]:
    if request.param == "memory":
        return MemoryRequestLog
    if request.param == "sqlite":
        return lambda: SqliteRequestLog(str(tmp_path / "log.db"))
    dsn, schema = request.getfixturevalue("postgres_schema")
    return lambda: PostgresRequestLog(dsn, schema)


async def test_verdicts_round_trip(make_store: Callable[[], RequestLogStore]) -> None:
    store = make_store()
    await store.open()
    try:
        await store.write([rec(1, VERDICTS), rec(2, None)])
        assert (await store.get("req_1")).guardrails == VERDICTS  # type: ignore[union-attr]
        assert (await store.get("req_2")).guardrails is None  # type: ignore[union-attr]
        assert {r.request_id for r in await store.query(RequestQuery())} == {"req_1", "req_2"}
    finally:
        await store.close()


def _old_columns() -> str:
    return ", ".join(f"{c} TEXT" for c in COLUMNS if c != "guardrails")


async def test_a_sqlite_day_table_from_before_gains_the_column(tmp_path: Any) -> None:
    path = str(tmp_path / "old.db")
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(f"CREATE TABLE {table_for(DAY)} ({_old_columns()}, PRIMARY KEY (request_id))")
        db.commit()
    store = SqliteRequestLog(path)
    await store.open()
    try:
        await store.write([rec(3, VERDICTS)])
        assert (await store.get("req_3")).guardrails == VERDICTS  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_a_postgres_day_table_from_before_gains_the_column(postgres_schema: tuple[str, str]) -> None:
    dsn, schema = postgres_schema
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE TABLE "{schema}".{table_for(DAY)} ({_old_columns()}, PRIMARY KEY (request_id))')
    finally:
        await conn.close()
    store = PostgresRequestLog(dsn, schema)
    await store.open()
    try:
        columns = await store._pool.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
            schema, table_for(DAY))
        assert "guardrails" in {c[0] for c in columns}
    finally:
        await store.close()
