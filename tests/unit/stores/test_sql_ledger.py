"""The spend ledger in PostgreSQL: batches written by several replicas at once, and rows PostgreSQL's text
cannot hold as they are."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid

from aigw.accounting.ledger import Ledger
from aigw.config.tenancy import LedgerConfig
from aigw.stores.base import SpendQuery
from aigw.stores.database import open_database
from aigw.stores.sql_ledger import as_row
from aigw.supervise import Supervisor
from tests.support.services import RUN_ID, pg_execute, postgres_dsn
from tests.unit.stores.test_tenancy_database import _rec


async def test_replicas_writing_batches_over_the_same_keys_at_once_never_deadlock() -> None:
    """Each batch adds to the rollup rows of the keys it has; two batches sharing keys must take those rows'
    locks in one order. In hash order (which differs with a batch's size) PostgreSQL found a deadlock in
    about one round in four of these, and the replica had to write its batch again."""
    dsn, schema = postgres_dsn(), f"aigw_test_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    await pg_execute(dsn, f'CREATE SCHEMA "{schema}"')
    replicas = [open_database(f"{dsn}?search_path={schema}") for _ in range(2)]
    rng = random.Random(7)
    try:
        for db in replicas:
            await db.open()
        await replicas[0].migrate()

        async def batch(db: object, tag: str) -> str:
            keys = rng.sample(range(400), rng.randint(50, 400))
            rows = [dataclasses.replace(_rec(0, key=f"k{k}", tenant=f"t{k % 50}", project=f"p{k % 200}"),
                                        id=f"sp_{tag}_{j}") for j, k in enumerate(keys)]
            try:
                await db.write(rows)  # type: ignore[attr-defined]
            except Exception as exc:
                return type(exc).__name__
            return ""

        failures: list[str] = []
        for round_ in range(20):
            outcomes = await asyncio.gather(*(batch(replicas[w % 2], f"{round_}_{w}") for w in range(4)))
            failures += [o for o in outcomes if o]
        assert failures == []
        by_key = await replicas[0].spend(SpendQuery(group_by="key", limit=10_000))
        assert sum(r["requests"] for r in by_key) == await replicas[0].count()  # the rollups hold every row
    finally:
        for db in replicas:
            await db.close()
        await pg_execute(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_a_model_name_holding_nul_is_written_and_holds_up_no_row_after_it(
        postgres_schema: tuple[str, str]) -> None:
    """A client's ``"model": "gpt\\u0000evil"`` made a ledger row PostgreSQL refused (text cannot hold NUL): its
    batch failed on every retry, at the front of the queue, and no row after it was written again. NUL is
    written as U+FFFD; the name as the client sent it still finds the row in a report."""
    dsn, schema = postgres_schema
    db = open_database(f"{dsn}?search_path={schema}")
    await db.open()
    ledger = Ledger(db, LedgerConfig(flush_interval_s=0.05, batch_size=2, retry_backoff_s=0.05))
    try:
        await db.migrate()
        ledger.start(Supervisor())
        ledger.record(as_row(_rec(1, model="gpt\x00evil")))
        for i in range(2, 6):
            ledger.record(as_row(_rec(i)))
        for _ in range(250):  # the writer flushes on its own clock: at most ~5 s
            if ledger.written == 5 or ledger.failures:
                break
            await asyncio.sleep(0.02)
        assert (ledger.written, ledger.failures, ledger.healthy, await db.count()) == (5, 0, True, 5)
        by_model = await db.spend(SpendQuery(group_by="model"))
        assert {r["model"]: r["requests"] for r in by_model} == {"gpt\ufffdevil": 1, "mock": 4}
        [row] = await db.spend(SpendQuery(group_by="key", model="gpt\x00evil"))
        assert row["requests"] == 1
    finally:
        await ledger.close()
        await db.close()
