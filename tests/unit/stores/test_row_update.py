"""A change applied under the row's lock (``update_tenant``/``update_project``/``update_key``), on SQLite and
PostgreSQL: it sees what another writer saved while it waited, so concurrent changes of one row all stand."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import asyncpg
import pytest

from aigw.stores.base import ApiKey, Limits, Project, Tenant
from aigw.stores.database import SqlDatabase, open_database
from aigw.stores.sql import UniqueViolation
from tests.support.services import RUN_ID, pg_execute, postgres_dsn

NOW = 1_800_000_000.0
WAIT_S = 0.3  # how long a change must keep waiting for a lock another writer holds


@dataclass
class Store:
    db: SqlDatabase
    other_writer: Callable[[str], Awaitable[Callable[[], Awaitable[None]]]]  # runs SQL holding the lock; -> commit


async def _sqlite_writer(path: str, sql: str) -> Callable[[], Awaitable[None]]:
    """Another process's connection: it takes the file's write lock, changes the row, and commits later."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(sql)

    async def commit() -> None:
        conn.execute("COMMIT")
        conn.close()

    return commit


async def _pg_writer(dsn: str, schema: str, sql: str) -> Callable[[], Awaitable[None]]:
    """Another replica's connection: it locks the row, changes it, and commits later."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    tx = conn.transaction()
    await tx.start()
    await conn.execute(sql)

    async def commit() -> None:
        await tx.commit()
        await conn.close()

    return commit


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        path = f"{tmp_path}/t.db"
        db = open_database(f"sqlite:///{path}")
        writer: Callable[[str], Awaitable[Callable[[], Awaitable[None]]]] = partial(_sqlite_writer, path)
    else:
        dsn, schema = postgres_dsn(), f"aigw_test_{RUN_ID}_{uuid.uuid4().hex[:6]}"
        await pg_execute(dsn, f'CREATE SCHEMA "{schema}"')
        db = open_database(f"{dsn}?search_path={schema}")
        writer = partial(_pg_writer, dsn, schema)
    await db.open()
    await db.migrate()
    await db.add_tenant(Tenant(id="t1", name="acme", created_at=NOW))
    await db.add_tenant(Tenant(id="t2", name="globex", created_at=NOW))
    await db.add_project(Project(id="p1", tenant_id="t1", name="web", created_at=NOW))
    await db.add_key(ApiKey(id="k1", tenant_id="t1", project_id="p1", key_hash="h1", prefix="sk-aigw-aaaa",
                            limits=Limits(rpm=1, tpm=10), metadata={"team": "x"}, created_at=NOW))
    try:
        yield Store(db, writer)
    finally:
        await db.close()
        if request.param == "postgres":
            await pg_execute(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _set_rpm(k: ApiKey) -> set[str]:
    k.limits = replace(k.limits, rpm=100)
    return {"limits"}


async def test_a_change_waits_for_the_row_another_writer_holds_and_keeps_what_it_wrote(store: Store) -> None:
    """The other writer sets tpm while holding the row; the change of rpm waits for it and keeps its tpm."""
    commit = await store.other_writer("""UPDATE api_keys SET limits = '{"rpm": 1, "tpm": 5000}' WHERE id = 'k1'""")
    update = asyncio.ensure_future(store.db.update_key("k1", _set_rpm))
    try:
        await asyncio.sleep(WAIT_S)
        assert not update.done()  # it waits for the lock: it has not read the row before the other write
    finally:
        await commit()
    saved = await asyncio.wait_for(update, 10)
    assert saved is not None
    before, after = saved
    assert (before.limits.rpm, before.limits.tpm) == (1, 5000)  # read after the other writer committed
    assert (after.limits.rpm, after.limits.tpm) == (100, 5000)
    key = await store.db.get_key("k1")
    assert key is not None and (key.limits.rpm, key.limits.tpm) == (100, 5000)


async def test_concurrent_changes_of_different_fields_all_stand(store: Store) -> None:
    def setter(**fields: object) -> Callable[[ApiKey], set[str]]:
        def change(k: ApiKey) -> set[str]:
            k.limits = replace(k.limits, **fields)  # type: ignore[arg-type]
            return {"limits"}
        return change

    def tag(k: ApiKey) -> set[str]:
        k.metadata = {**k.metadata, "tagged": True}
        return {"metadata"}

    changes = [setter(rpm=7), setter(tpm=70), setter(max_parallel=3), setter(budget_usd=2.5), tag]
    results = await asyncio.wait_for(asyncio.gather(*(store.db.update_key("k1", c) for c in changes)), 10)
    assert all(r is not None for r in results)
    key = await store.db.get_key("k1")
    assert key is not None
    assert (key.limits.rpm, key.limits.tpm, key.limits.max_parallel, key.limits.budget_usd) == (7, 70, 3, 2.5)
    assert key.metadata == {"team": "x", "tagged": True}


async def test_a_change_that_raises_writes_nothing_and_leaves_the_row_unlocked(store: Store) -> None:
    def refuse(k: ApiKey) -> set[str]:
        k.limits = Limits(rpm=999)
        raise PermissionError("not allowed")

    with pytest.raises(PermissionError):
        await store.db.update_key("k1", refuse)
    key = await store.db.get_key("k1")
    assert key is not None and key.limits.rpm == 1
    assert await asyncio.wait_for(store.db.update_key("k1", _set_rpm), 10) is not None  # not left locked
    commit = await store.other_writer("UPDATE api_keys SET name = 'free' WHERE id = 'k1'")  # nor is the file
    await commit()


async def test_a_rename_to_a_name_taken_is_a_unique_violation_and_writes_nothing(store: Store) -> None:
    def rename(t: Tenant) -> set[str]:
        t.name, t.limits = "globex", Limits(rpm=5)
        return {"name", "limits"}

    with pytest.raises(UniqueViolation):
        await store.db.update_tenant("t1", rename)
    tenant = await store.db.get_tenant("t1")
    assert tenant is not None and (tenant.name, tenant.limits.rpm) == ("acme", None)


async def test_no_row_is_none_and_a_change_of_nothing_writes_nothing(store: Store) -> None:
    assert await store.db.update_project("p-gone", lambda p: {"name"}) is None
    saved = await store.db.update_project("p1", lambda p: set())
    assert saved is not None and saved[0].name == saved[1].name == "web"
