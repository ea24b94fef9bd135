"""A tenant's request log listing (``GET /admin/requests?tenant=``, a tenant admin's own list) reads its tenant's
rows by an index, on new day tables and on those made before it (``aigw db upgrade``, and SQLite's open)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner

from aigw.cli.main import cli
from aigw.observability.request_log import DAY_S, RequestQuery, RequestRecord
from aigw.observability.request_log_sql import PostgresRequestLog, SqliteRequestLog, _page_sql, _where, table_for

DAY = 20_000
TABLE = table_for(DAY)
INDEX = f"{TABLE}_tenant"
TENANTS = 20


def _records(n: int = 2000) -> list[RequestRecord]:
    return [RequestRecord(request_id=f"req_{i:05d}", ts=DAY * DAY_S + i, tenant_id=f"t{i % TENANTS}",
                          key_id=f"k{i % 100}", model="gpt") for i in range(n)]


def _listing(ph: Any, q: RequestQuery) -> tuple[str, list[Any]]:
    """The statement the store sends for one day of ``q``'s page."""
    where, args = _where(q, ph)
    return _page_sql(DAY, where, q.limit), args


TENANT_PAGES = [RequestQuery(tenant_id="t3", limit=51),
                RequestQuery(tenant_id="t3", since=DAY * DAY_S + 100, until=DAY * DAY_S + 1500, limit=51)]
# a later page: the index starts at the cursor, rather than reading every newer row of the tenant's day again
LATER_PAGE = RequestQuery(tenant_id="t3", cursor=(DAY * DAY_S + 963, "req_00963"), limit=51)


async def _sqlite_plan(path: Path, q: RequestQuery) -> list[str]:
    sql, args = _listing(lambda n: "?", q)
    with sqlite3.connect(path) as conn:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]


async def _pg_plan(dsn: str, schema: str, q: RequestQuery) -> str:
    sql, args = _listing(lambda n: f"${n}", q)
    # a few thousand rows are few enough for the planner to read them all and sort: with those plans off, the
    # plan shows whether an index finds the tenant's rows in the page's order (else it sorts, or scans the day)
    settings = {"search_path": schema, "enable_seqscan": "off", "enable_bitmapscan": "off", "enable_sort": "off"}
    conn = await asyncpg.connect(dsn, server_settings=settings)
    try:
        await conn.execute(f"ANALYZE {TABLE}")
        return "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
    finally:
        await conn.close()


@pytest.mark.parametrize("q", TENANT_PAGES, ids=["newest", "window"])
async def test_a_tenants_sqlite_listing_searches_its_index_not_the_whole_day(tmp_path: Path,
                                                                            q: RequestQuery) -> None:
    store = SqliteRequestLog(str(tmp_path / "log.db"))
    await store.open()
    try:
        await store.write(_records())
        plan = await _sqlite_plan(tmp_path / "log.db", q)
        assert len(plan) == 1 and plan[0].startswith(f"SEARCH {TABLE} USING INDEX {INDEX} (tenant_id=?"), plan
        # one step: no "USE TEMP B-TREE FOR ORDER BY", the index's order is the page's
        newest = sorted((r for r in _records() if q.matches(r)), key=lambda r: r.ts, reverse=True)
        assert [r.request_id for r in await store.query(q)] == [r.request_id for r in newest[:q.limit]]
    finally:
        await store.close()


@pytest.mark.parametrize("q", TENANT_PAGES, ids=["newest", "window"])
async def test_a_tenants_postgres_listing_searches_its_index_not_the_whole_day(
        postgres_schema: tuple[str, str], q: RequestQuery) -> None:
    dsn, schema = postgres_schema
    store = PostgresRequestLog(dsn, schema)
    await store.open()
    try:
        await store.write(_records())
        plan = await _pg_plan(dsn, schema, q)
        assert f"Index Scan Backward using {INDEX}" in plan, plan
        assert "Seq Scan" not in plan and "Sort" not in plan, plan  # no scan of the day, no sort of its rows
    finally:
        await store.close()


def _sqlite_indexes(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        return sorted(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))


async def _old_sqlite_log(path: Path) -> None:
    """A request log file as the previous version left it: day tables without the tenant index."""
    store = SqliteRequestLog(str(path))
    await store.open()
    await store.write([*_records(200), RequestRecord(request_id="req_y", ts=(DAY - 1) * DAY_S, tenant_id="t1")])
    await store.close()
    with sqlite3.connect(path) as conn:
        for table in (TABLE, table_for(DAY - 1)):
            conn.execute(f"DROP INDEX IF EXISTS {table}_tenant")


def test_sqlite_day_tables_made_before_the_index_get_it_from_db_upgrade_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'aigw.db'}"
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade", "--database-url", url]).exit_code == 0
    asyncio.run(_old_sqlite_log(tmp_path / "aigw.requests.db"))
    assert not any(name.endswith("_tenant") for name, _ in _sqlite_indexes(tmp_path / "aigw.requests.db"))
    first = runner.invoke(cli, ["db", "upgrade", "--database-url", url])
    assert first.exit_code == 0, first.output
    assert "request log" in first.output and "2 day tables" in first.output, first.output
    indexes = _sqlite_indexes(tmp_path / "aigw.requests.db")
    assert {f"{TABLE}_tenant", f"{table_for(DAY - 1)}_tenant"} <= {name for name, _ in indexes}
    again = runner.invoke(cli, ["db", "upgrade", "--database-url", url])
    assert again.exit_code == 0 and again.output.strip().endswith("database is up to date"), again.output
    assert _sqlite_indexes(tmp_path / "aigw.requests.db") == indexes  # the second run changed nothing
    assert asyncio.run(_sqlite_plan(tmp_path / "aigw.requests.db", TENANT_PAGES[0]))[0].startswith(
        f"SEARCH {TABLE} USING INDEX {INDEX}")


async def test_the_embedded_gateways_start_gives_old_sqlite_day_tables_the_index(tmp_path: Path) -> None:
    """SQLite migrates on start (no `aigw db upgrade` needed): opening the request log indexes its old days."""
    await _old_sqlite_log(tmp_path / "log.db")
    store = SqliteRequestLog(str(tmp_path / "log.db"))
    await store.open()
    await store.close()
    assert {f"{TABLE}_tenant", f"{table_for(DAY - 1)}_tenant"} <= {n for n, _ in _sqlite_indexes(tmp_path / "log.db")}


async def _pg_indexes(dsn: str, schema: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 "
                                "AND tablename LIKE 'aigw\\_request\\_log\\_d%' ORDER BY 1", schema)
        return [(r[0], r[1]) for r in rows]
    finally:
        await conn.close()


async def _old_pg_log(dsn: str, schema: str) -> None:
    """Day tables without the tenant index, and migration 5 not recorded: as the previous version left them."""
    store = PostgresRequestLog(dsn, schema)
    await store.open()
    await store.write([*_records(200), RequestRecord(request_id="req_y", ts=(DAY - 1) * DAY_S, tenant_id="t1")])
    await store.close()
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        for table in (TABLE, table_for(DAY - 1)):
            await conn.execute(f"DROP INDEX IF EXISTS {table}_tenant")
        await conn.execute("DELETE FROM schema_migrations WHERE version >= 5")
    finally:
        await conn.close()


def test_postgres_day_tables_made_before_the_index_get_it_from_db_upgrade_once(
        postgres_schema: tuple[str, str]) -> None:
    dsn, schema = postgres_schema
    url = f"{dsn}?search_path={schema}"
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade", "--database-url", url]).exit_code == 0
    asyncio.run(_old_pg_log(dsn, schema))
    assert not any(name.endswith("_tenant") for name, _ in asyncio.run(_pg_indexes(dsn, schema)))
    first = runner.invoke(cli, ["db", "upgrade", "--database-url", url])
    assert first.exit_code == 0 and "applied migrations [5]" in first.output, first.output
    indexes = asyncio.run(_pg_indexes(dsn, schema))
    assert {f"{TABLE}_tenant", f"{table_for(DAY - 1)}_tenant"} <= {name for name, _ in indexes}
    again = runner.invoke(cli, ["db", "upgrade", "--database-url", url])
    assert again.exit_code == 0 and again.output.strip().endswith("database is up to date"), again.output
    assert asyncio.run(_pg_indexes(dsn, schema)) == indexes  # the second run changed nothing


async def test_a_later_sqlite_page_starts_its_search_at_the_cursor(tmp_path: Path) -> None:
    store = SqliteRequestLog(str(tmp_path / "log.db"))
    await store.open()
    try:
        await store.write(_records())
        [step] = await _sqlite_plan(tmp_path / "log.db", LATER_PAGE)
        assert step.startswith(f"SEARCH {TABLE} USING INDEX {INDEX} (tenant_id=? AND (ts,request_id)<(?,?))"), step
        got = [r.request_id for r in await store.query(LATER_PAGE)]
        assert got == [f"req_{i:05d}" for i in range(943, -1, -20)][:51]
    finally:
        await store.close()


async def test_a_later_postgres_page_starts_its_search_at_the_cursor(postgres_schema: tuple[str, str]) -> None:
    dsn, schema = postgres_schema
    store = PostgresRequestLog(dsn, schema)
    await store.open()
    try:
        await store.write(_records())
        plan = await _pg_plan(dsn, schema, LATER_PAGE)
        assert f"Index Scan Backward using {INDEX}" in plan, plan
        assert "Index Cond: ((tenant_id = 't3'::text) AND (ROW(ts, request_id) < ROW(" in plan, plan
        got = [r.request_id for r in await store.query(LATER_PAGE)]
        assert got == [f"req_{i:05d}" for i in range(943, -1, -20)][:51]
    finally:
        await store.close()


async def test_a_worker_opening_the_log_while_another_indexes_it_waits_rather_than_losing_its_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve --workers N`` after an upgrade: one worker builds the old days' indexes (as long as a day is big)
    while the others' open waits for the file. A wait past SQLite's busy timeout (5 s; 0.1 s here) failed the
    open, and that worker's request log stayed in memory till a restart."""
    import functools
    import threading

    from aigw.observability import request_log_sql
    from aigw.sqlite_child import WAL_PRAGMAS

    await _old_sqlite_log(tmp_path / "log.db")
    short = (*(p for p in WAL_PRAGMAS if "busy_timeout" not in p), "PRAGMA busy_timeout=100")
    monkeypatch.setattr(request_log_sql, "SqliteThread",
                        functools.partial(request_log_sql.SqliteThread, pragmas=short))
    holder = sqlite3.connect(tmp_path / "log.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # the other worker, building an index
    released = threading.Timer(1.0, lambda: holder.execute("COMMIT"))
    released.start()
    store = SqliteRequestLog(str(tmp_path / "log.db"))
    try:
        await store.open()
        assert f"{TABLE}_tenant" in {name for name, _ in _sqlite_indexes(tmp_path / "log.db")}
    finally:
        released.join()
        holder.close()
        await store.close()
