"""The spend ledger in SQL: idempotent batch writes, daily rollups, reports, request pages.

A batch lands in one transaction: rows whose id is already in the ledger are
skipped (a replay after a lost commit adds nothing), and only the new rows are
added to ``spend_rollup`` (day x tenant x project x key x model). Reports read
the rollups, never the ledger, so they cost the same at ten million rows as at
ten; request pages read the ledger through (tenant_id, ts_end) indexes.
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Any

from aigw.ids import time_ordered_id
from aigw.pg_text import pg_rows, pg_text
from aigw.stores.base import NANO, RequestQuery, SpendQuery, SpendRecord
from aigw.stores.sql import Row, Sql
from aigw.stores.sqlite.db import SqliteSql
from aigw.stores.sqlite.ledger_rows import COLUMNS, ROLLUP_COLS, SIDE_ENDPOINTS, SUMS, write_rows

_BILLED_MODEL = "COALESCE(NULLIF(served_model, ''), model)"
# a side call's row (the cache's embedding) adds its tokens and cost, not a request
_REQUESTS = f"sum(CASE WHEN endpoint IN ({', '.join(repr(e) for e in SIDE_ENDPOINTS)}) THEN 0 ELSE 1 END)"


def rollup_sql(source: str, where: str) -> str:
    """Add the rows of ``source`` (filtered by ``where``) to the daily rollups."""
    sums = ", ".join(f"sum({c})" for c in SUMS)
    updates = ", ".join(f"{c} = spend_rollup.{c} + excluded.{c}" for c in ROLLUP_COLS)
    return (
        f"INSERT INTO spend_rollup (day, tenant_id, project_id, key_id, model, {', '.join(ROLLUP_COLS)}) "
        f"SELECT day, tenant_id, project_id, key_id, {_BILLED_MODEL}, {_REQUESTS}, "
        f"sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END), sum(cache_hit), {sums} "
        f"FROM {source} WHERE {where} GROUP BY day, tenant_id, project_id, key_id, {_BILLED_MODEL} "
        # in the primary key's order: two replicas' batches lock the rollup rows they share in the same order,
        # so they cannot deadlock (in hash order, which differs by batch, they did now and then under load)
        f"ORDER BY day, tenant_id, project_id, key_id, {_BILLED_MODEL} "
        f"ON CONFLICT (day, tenant_id, project_id, key_id, model) DO UPDATE SET {updates}"
    )


def new_record_id() -> str:
    """Ledger rows get their own id: a client-chosen x-request-id must not make a row vanish.

    Time-ordered (``aigw.ids``): inserts append to the primary-key index, and two replicas
    (or a restarted one) never collide.
    """
    return time_ordered_id("sp_")


_DAYS: dict[int, str] = {}


def day_of(ts: float) -> str:
    """The UTC day of ``ts`` (memoised per day: called for every ledger row)."""
    n = int(ts // 86400)
    day = _DAYS.get(n)
    if day is None:
        if len(_DAYS) > 1000:
            _DAYS.clear()
        day = _DAYS[n] = dt.datetime.fromtimestamp(ts, dt.UTC).date().isoformat()
    return day


def as_row(rec: SpendRecord) -> tuple[Any, ...]:
    """The ledger row of a record, in ``COLUMNS`` order (what the ledger buffers and writes)."""
    return (
        rec.id or new_record_id(), rec.request_id, rec.ts_start, rec.ts_end, day_of(rec.ts_start), rec.tenant_id,
        rec.project_id,
        rec.key_id, rec.key_prefix, rec.model, rec.served_model, rec.deployment_id, rec.provider, rec.endpoint,
        rec.prompt_tokens, rec.completion_tokens, rec.cached_tokens, rec.cache_write_tokens,
        rec.reasoning_tokens, rec.cost_nano, rec.cost_saved_nano, float(rec.latency_ms), float(rec.upstream_ms),
        float(rec.overhead_ms), rec.status, rec.error_kind, int(rec.cache_hit), rec.handled_by, rec.retries,
        rec.fallbacks, int(rec.stream), rec.usage_source,
    )


def _usd(row: Row) -> Row:
    for c in ("cost_nano", "cost_saved_nano"):
        if c in row:
            row[c.replace("_nano", "_usd")] = int(row.pop(c) or 0) / NANO
    for c in ("cache_hit", "stream"):
        if c in row:
            row[c] = bool(row[c])
    return row


_GROUPS = {"key": "key_id", "project": "project_id", "tenant": "tenant_id", "model": "model", "day": "day"}


async def spend_report(db: Sql, q: SpendQuery) -> list[Row]:
    col = _GROUPS[q.group_by]
    where, args = ["1 = 1"], []
    for column, value in (("tenant_id", q.tenant_id), ("project_id", q.project_id), ("key_id", q.key_id),
                          ("model", q.model)):
        if value is not None:
            where.append(f"{column} = ?")
            # PostgreSQL holds a NUL of a name as U+FFFD (``write_batch``): the name as sent finds it there too
            args.append(value if isinstance(db, SqliteSql) else pg_text(value))
    if q.since_day:
        where.append("day >= ?")
        args.append(q.since_day)
    if q.until_day:
        where.append("day <= ?")
        args.append(q.until_day)
    sums = ", ".join(f"sum({c}) AS {c}" for c in ROLLUP_COLS)
    inner = f"SELECT {col} AS grp, {sums} FROM spend_rollup WHERE {' AND '.join(where)} GROUP BY {col}"
    order = "r.grp" if q.group_by == "day" else "r.cost_nano DESC, r.grp"
    # the group's name beside its id: a lookup per reported row in a small table (by its primary key)
    if q.group_by == "key":
        sql = (f"SELECT r.*, k.prefix AS key_prefix, k.name AS key_name FROM ({inner}) r "
               f"LEFT JOIN api_keys k ON k.id = r.grp ORDER BY {order} LIMIT ?")
    elif q.group_by in ("project", "tenant"):
        table = "projects" if q.group_by == "project" else "tenants"
        sql = (f"SELECT r.*, n.name AS {q.group_by}_name FROM ({inner}) r "
               f"LEFT JOIN {table} n ON n.id = r.grp ORDER BY {order} LIMIT ?")
    else:
        sql = f"SELECT r.* FROM ({inner}) r ORDER BY {order} LIMIT ?"
    rows = await db.fetch(sql, *args, q.limit)
    out = []
    for r in rows:
        r[q.group_by] = r.pop("grp")
        for c in ROLLUP_COLS:
            r[c] = int(r[c] or 0)
        nano = r["cost_nano"]
        row = _usd(r)  # cost_usd: the nano-dollars / 1e9
        row["cost_nano"] = nano  # kept too: a total sums these exactly (a float holds every nano only to ~$9M)
        out.append(row)
    return out


async def request_page(db: Sql, q: RequestQuery) -> list[Row]:
    where: list[str] = ["1 = 1"]
    args: list[Any] = []
    for column, value in (("tenant_id", q.tenant_id), ("key_id", q.key_id), ("model", q.model)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if q.status_min is not None:
        where.append("status >= ?")
        args.append(q.status_min)
    for cond, ts in (("ts_end >= ?", q.since), ("ts_end <= ?", q.until), ("ts_end < ?", q.before_ts)):
        if ts is not None:
            where.append(cond)
            args.append(ts)
    sql = f"SELECT * FROM spend_ledger WHERE {' AND '.join(where)} ORDER BY ts_end DESC LIMIT ?"
    return [_usd(r) for r in await db.fetch(sql, *args, q.limit)]


async def one_request(db: Sql, request_id: str, tenant_id: str | None) -> Row | None:
    sql, args = "SELECT * FROM spend_ledger WHERE request_id = ?", [request_id]
    if tenant_id is not None:
        sql += " AND tenant_id = ?"
        args.append(tenant_id)
    rows = await db.fetch(sql + " ORDER BY ts_end DESC LIMIT 1", *args)
    return _usd(rows[0]) if rows else None


async def ledger_count(db: Sql) -> int:
    rows = await db.fetch("SELECT count(*) AS n FROM spend_ledger")
    return int(rows[0]["n"])


def unique_rows(records: list[SpendRecord] | list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows from ``as_row`` (or already rows), one per row id."""
    return list({r[0]: r for r in (x if isinstance(x, tuple) else as_row(x) for x in records)}.values())


async def write_batch(db: Sql, records: list[SpendRecord] | list[tuple[Any, ...]]) -> int:
    """Write a batch (records, or rows from ``as_row``) in one transaction; returns how many were new."""
    rows = unique_rows(records)
    if not rows:
        return 0
    if isinstance(db, SqliteSql):  # the whole batch in one hop to the database thread
        return await db.run(partial(write_rows, rows))
    async with db.transaction() as tx:
        return await _write_postgres(tx, rows)


async def _write_postgres(tx: Sql, rows: list[tuple[Any, ...]]) -> int:
    conn = tx.conn  # type: ignore[attr-defined]  # the pinned asyncpg connection
    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS ledger_in (LIKE spend_ledger) ON COMMIT DELETE ROWS")
    # a NUL in a text field (a client's model name) failed the batch on every retry, and every row behind it
    await conn.copy_records_to_table("ledger_in", records=pg_rows(rows), columns=COLUMNS)
    sql = (f"WITH ins AS (INSERT INTO spend_ledger SELECT * FROM ledger_in ON CONFLICT (id) DO NOTHING "
           f"RETURNING *), up AS ({rollup_sql('ins', 'true')}) SELECT count(*) FROM ins")
    return int(await conn.fetchval(sql))
