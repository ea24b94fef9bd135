"""The spend ledger in PostgreSQL: batches written by several replicas at once."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid

from aigw.stores.base import SpendQuery
from aigw.stores.database import open_database
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
