"""Spend reports at ten million ledger rows: they read the rollups, never the ledger.

    .venv/bin/python bench/spend_report_bench.py --backend sqlite   [--rows 10000000]
    .venv/bin/python bench/spend_report_bench.py --backend postgres [--dsn postgresql://postgres@127.0.0.1:5432/test]

Generates ROWS ledger rows inside the database (PostgreSQL ``generate_series``,
SQLite a recursive CTE), 1000 keys in 100 projects of 20 tenants, each key on 2 of 6
models, spread over 90 days, builds the rollups from them once with one aggregate (what the
ledger writer maintains incrementally), then times each report of
``GET /admin/spend`` through the store (median of 7 runs) and shows the query
plan, to prove no report scans the ledger. Also times one 500-row ledger batch
write at that size (the writer's hot statement). Loopback only; bounded sizes;
the PostgreSQL run uses a throwaway schema, the SQLite run a temp file; both
are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from aigw.stores.base import SpendQuery, SpendRecord
from aigw.stores.database import SqlDatabase, open_database
from aigw.stores.sql_ledger import rollup_sql
from aigw.stores.sqlite.ledger_rows import COLUMNS

DAY0 = 1_790_000_000.0  # 2026-09-21
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "claude-haiku-4-5", "gemini-2.5-flash", "mock")

# One SELECT producing a ledger row from an integer n (dialect-neutral SQL, `n` bound by the caller).
_ROW = (
    "'sp_' || n, 'req_' || n, {t0} + ((n / 1009) % 90) * 86400.0 + (n % 86400), "
    "{t0} + ((n / 1009) % 90) * 86400.0 + (n % 86400) + 0.5, "
    "{day}, 'ten_' || (n % 20), 'prj_' || (n % 100), 'key_' || (n % 1000), 'sk-aigw-' || (n % 1000), "
    "{model}, {model}, 'dep_' || (n % 6), 'mock', 'chat', 100 + n % 900, 20 + n % 300, n % 64, 0, 0, "
    "1000 + n % 100000, 0, 50.0, 45.0, 5.0, CASE WHEN n % 50 = 0 THEN 429 ELSE 200 END, "
    "CASE WHEN n % 50 = 0 THEN 'rate_limited' ELSE '' END, 0, '', 0, 0, n % 2, 'provider'"
)


def _model_expr(n: str) -> str:
    """Each key uses two of the six models."""
    pick = f"(({n} % 1000 + ({n} / 1000) % 2) % 6)"
    return "CASE " + " ".join(f"WHEN {pick} = {i} THEN '{m}'" for i, m in enumerate(MODELS)) + " END"


async def generate(db: SqlDatabase, rows: int, chunk: int = 1_000_000) -> float:
    started = time.perf_counter()
    cols = ", ".join(COLUMNS)
    for lo in range(0, rows, chunk):
        hi = min(rows, lo + chunk) - 1
        if db.kind == "postgres":
            day = f"to_char(to_timestamp({DAY0} + ((n / 1009) % 90) * 86400.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
            select = _ROW.format(t0=DAY0, day=day, model=_model_expr("n"))
            sql = f"INSERT INTO spend_ledger ({cols}) SELECT {select} FROM generate_series({lo}, {hi}) AS n"
        else:
            day = f"date({DAY0} + ((n / 1009) % 90) * 86400, 'unixepoch')"
            select = _ROW.format(t0=DAY0, day=day, model=_model_expr("n"))
            sql = (f"WITH RECURSIVE s(n) AS (SELECT {lo} UNION ALL SELECT n + 1 FROM s WHERE n < {hi}) "
                   f"INSERT INTO spend_ledger ({cols}) SELECT {select} FROM s")
        await db.sql.execute(sql)
        print(f"  ledger rows: {hi + 1:,} ({time.perf_counter() - started:.0f} s)", flush=True)
    await db.sql.execute(rollup_sql("spend_ledger", "true"))
    await db.sql.execute("ANALYZE")
    return time.perf_counter() - started


QUERIES = [
    ("by key, all time", SpendQuery(group_by="key")),
    ("by project, one tenant", SpendQuery(group_by="project", tenant_id="ten_3")),
    ("by tenant, one month", SpendQuery(group_by="tenant", since_day="2026-10-01", until_day="2026-10-31")),
    ("by model, one tenant, one week", SpendQuery(group_by="model", tenant_id="ten_1", since_day="2026-10-05",
                                                  until_day="2026-10-11")),
    ("by day, one key", SpendQuery(group_by="day", key_id="key_42")),
]


async def time_reports(db: SqlDatabase) -> list[tuple[str, float, int]]:
    out = []
    for label, q in QUERIES:
        runs, rows = [], 0
        for _ in range(7):
            t = time.perf_counter()
            rows = len(await db.spend(q))
            runs.append((time.perf_counter() - t) * 1000)
        out.append((label, statistics.median(runs), rows))
    return out


async def plan_touches_ledger(db: SqlDatabase) -> bool:
    sql = "SELECT key_id, sum(cost_nano) FROM spend_rollup WHERE tenant_id = 'ten_3' GROUP BY key_id"
    prefix = "EXPLAIN " if db.kind == "postgres" else "EXPLAIN QUERY PLAN "
    plan = " ".join(str(v) for r in await db.sql.fetch(prefix + sql) for v in r.values())
    return "spend_ledger" in plan


async def time_batch_write(db: SqlDatabase) -> float:
    now = time.time()
    batch = [SpendRecord(id=f"bench_{uuid.uuid4().hex}", request_id="r", ts_start=now, ts_end=now,
                         tenant_id="ten_1", project_id="prj_1", key_id="key_1", model="mock", cost_nano=1000)
             for _ in range(500)]
    t = time.perf_counter()
    await db.write(batch)
    return (time.perf_counter() - t) * 1000


async def main(args: argparse.Namespace) -> None:
    schema = f"aigw_bench_{uuid.uuid4().hex[:8]}"
    tmp = tempfile.TemporaryDirectory()
    if args.backend == "postgres":
        import asyncpg

        conn = await asyncpg.connect(args.dsn)
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.close()
        url = f"{args.dsn}?search_path={schema}"
    else:
        url = f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    db = open_database(url)
    if args.backend == "postgres":
        db.sql._timeout = 1800.0  # type: ignore[attr-defined]  # bulk generation, not the 5 s request budget
    await db.open()
    try:
        await db.migrate()
        print(f"{args.backend}: generating {args.rows:,} ledger rows ...", flush=True)
        gen_s = await generate(db, args.rows)
        rollups = (await db.sql.fetch("SELECT count(*) AS n FROM spend_rollup"))[0]["n"]
        print(f"generated in {gen_s:.0f} s; ledger {await db.count():,} rows, rollups {rollups:,} rows")
        print(f"report plan reads the ledger: {await plan_touches_ledger(db)}")
        print(f"| report ({args.backend}, {args.rows:,} ledger rows) | median ms | rows |")
        print("| --- | ---: | ---: |")
        for label, ms, n in await time_reports(db):
            print(f"| {label} | {ms:.2f} | {n} |")
        print(f"| ledger batch write, 500 rows | {await time_batch_write(db):.1f} | 500 |")
    finally:
        await db.close()
        if args.backend == "postgres":
            import asyncpg

            conn = await asyncpg.connect(args.dsn)
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await conn.close()
        tmp.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    asyncio.run(main(parser.parse_args()))
