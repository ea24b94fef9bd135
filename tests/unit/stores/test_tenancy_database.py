"""The durable store, SQLite and PostgreSQL, through one suite: tenancy rows, ledger, rollups."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aigw.stores import database
from aigw.stores.base import (
    BY_MASTER,
    NANO,
    ApiKey,
    Limits,
    Project,
    RequestQuery,
    SpendQuery,
    SpendRecord,
    Tenant,
    to_nano,
    window_of,
)
from aigw.stores.database import AmbiguousName, SqlDatabase, open_database
from aigw.stores.sql import UniqueViolation
from tests.support.services import RUN_ID, pg_execute, postgres_dsn

NOW = 1_800_000_000.0  # 2027-01-15


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlDatabase]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/t.db"
    else:
        dsn, schema = postgres_dsn(), f"aigw_test_{RUN_ID}_{uuid.uuid4().hex[:6]}"
        await pg_execute(dsn, f'CREATE SCHEMA "{schema}"')
        url = f"{dsn}?search_path={schema}"
    store = open_database(url)
    await store.open()
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()
        if request.param == "postgres":
            await pg_execute(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_processes_starting_together_migrate_one_sqlite_file_once(tmp_path: Path) -> None:
    """``--workers N`` on a new file: every worker migrates at start; one does it, the others wait."""
    stores = [open_database(f"sqlite:///{tmp_path}/shared.db") for _ in range(4)]  # a connection each
    for store in stores:
        await store.open()
    try:
        applied = await asyncio.gather(*(store.migrate() for store in stores))
        assert sorted(len(a) for a in applied)[-1] > 0 and sum(1 for a in applied if a) == 1
        assert await stores[0].pending_migrations() == []
    finally:
        for store in stores:
            await store.close()


@pytest.mark.parametrize("wal", [True, False])
async def test_a_start_waits_past_sqlites_busy_timeout_for_a_file_another_process_holds(tmp_path: Path,
                                                                                      wal: bool) -> None:
    """On a busy machine a worker migrating (or writing) can hold the file longer than SQLite's 5 s busy
    timeout: the next worker's start-up waited those 5 s, then failed with "database is locked" (and one
    that found a new file still being switched to WAL failed at once)."""
    import sqlite3
    import threading

    path = tmp_path / "held.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    if wal:
        holder.execute("PRAGMA journal_mode=WAL")  # as the first worker leaves a new file
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE held (x)")
    released = threading.Timer(6.0, lambda: holder.execute("ROLLBACK"))
    released.start()
    store = open_database(f"sqlite:///{path}")
    await store.open()
    try:
        assert await store.migrate()  # after the other connection let go: all migrations applied
        assert await store.pending_migrations() == []
    finally:
        released.join()
        holder.close()
        await store.close()


async def _seed(db: SqlDatabase) -> None:
    await db.add_tenant(Tenant(id="t1", name="acme", limits=Limits(budget_usd=50), created_at=NOW))
    await db.add_tenant(Tenant(id="t2", name="globex", created_at=NOW))
    await db.add_project(Project(id="p1", tenant_id="t1", name="web", created_at=NOW))
    await db.add_project(Project(id="p2", tenant_id="t2", name="web", created_at=NOW))
    await db.add_key(ApiKey(id="k1", tenant_id="t1", project_id="p1", key_hash="h1", prefix="sk-aigw-aaaa",
                            allowed_models=["mock"], limits=Limits(rpm=10, budget_usd=1, budget_period="daily"),
                            created_at=NOW))
    await db.add_key(ApiKey(id="k2", tenant_id="t2", project_id="p2", key_hash="h2", prefix="sk-aigw-bbbb",
                            created_at=NOW))


def _rec(i: int, key: str = "k1", tenant: str = "t1", project: str = "p1", cost: float = 0.01,
         ts: float = NOW, model: str = "mock", status: int = 200) -> SpendRecord:
    return SpendRecord(id=f"sp_{key}_{i}", request_id=f"req_{i}", ts_start=ts - 0.1, ts_end=ts, tenant_id=tenant,
                       project_id=project, key_id=key, key_prefix="sk-aigw-x", model=model, served_model=model,
                       prompt_tokens=10, completion_tokens=5, cached_tokens=2, cost_nano=to_nano(cost),
                       status=status, latency_ms=12.5)


async def test_migrations_apply_once(db: SqlDatabase) -> None:
    assert await db.migrate() == []
    assert await db.pending_migrations() == []


async def test_a_rotated_keys_previous_secret_is_found_with_the_end_of_its_grace(db: SqlDatabase) -> None:
    await _seed(db)
    key = await db.get_key("k1")
    assert key is not None and key.previous_hash is None and key.previous_until is None
    key.key_hash, key.previous_hash, key.previous_until = "h1-new", "h1", NOW + 60
    await db.save_key(key)
    new, old = await db.grant_by_hash("h1-new"), await db.grant_by_hash("h1")
    assert new is not None and new.until is None and new.usable(NOW + 3600)
    assert old is not None and old.key.id == "k1" and old.until == NOW + 60
    assert old.usable(NOW + 59) and not old.usable(NOW + 60)
    key.key_hash, key.previous_hash, key.previous_until = "h1-newer", None, None  # rotated again, no grace
    await db.save_key(key)
    assert await db.grant_by_hash("h1") is None and await db.grant_by_hash("h1-new") is None


async def test_key_hashes_reads_every_key_then_only_the_secrets_set_since(db: SqlDatabase) -> None:
    """The key filter's set (docs/tenancy.md, "A flood of unknown keys"): one read of every key's hashes, then
    reads of the keys made or rotated since, by the database's clock (the next ``since`` comes with each read)."""
    await _seed(db)
    everything, since = await db.key_hashes(None)
    assert sorted(everything) == ["h1", "h2"]
    await db.sql.execute("UPDATE api_keys SET hashed_at = hashed_at - 60")  # made a minute ago
    assert (await db.key_hashes(since))[0] == []
    await db.add_key(ApiKey(id="k3", tenant_id="t1", project_id="p1", key_hash="h3", prefix="sk-aigw-cccc",
                            created_at=NOW))
    rotated = await db.get_key("k2")
    assert rotated is not None
    rotated.key_hash, rotated.previous_hash, rotated.previous_until = "h2-new", "h2", NOW + 60
    await db.save_key(rotated, {"key_hash", "previous_hash", "previous_until"})
    revoked = await db.get_key("k1")
    assert revoked is not None
    revoked.revoked_at = NOW
    await db.save_key(revoked, {"revoked_at"})  # no new secret: not read again
    changed, later = await db.key_hashes(since)
    assert sorted(changed) == ["h2", "h2-new", "h3"]
    assert later >= since
    assert sorted((await db.key_hashes(None))[0]) == ["h1", "h2", "h2-new", "h3"]  # a revoked key's too


async def test_a_database_made_before_key_rotation_grace_upgrades_in_place(tmp_path: Path) -> None:
    from aigw.stores.sql import migrations, split_statements

    store = open_database(f"sqlite:///{tmp_path}/v1.db")
    await store.open()
    try:
        [(version, script), *_] = migrations(store._migrations)
        assert version == 1
        for statement in split_statements(script):  # as a gateway of the previous version left it
            await store.sql.execute(statement)
        await store.sql.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                                "applied_at DOUBLE PRECISION NOT NULL)")
        await store.sql.execute("INSERT INTO schema_migrations VALUES (1, 0)")
        await store.sql.execute("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', 0)")
        await store.sql.execute("INSERT INTO projects (id, tenant_id, name, created_at) VALUES ('p1', 't1', 'w', 0)")
        await store.sql.execute("INSERT INTO api_keys (id, tenant_id, project_id, key_hash, prefix, created_at) "
                                "VALUES ('k1', 't1', 'p1', 'h1', 'sk-aigw-aaaa', 0)")
        await store.sql.execute("INSERT INTO api_keys (id, tenant_id, project_id, key_hash, prefix, created_at, "
                                "enabled) VALUES ('k2', 't1', 'p1', 'h2', 'sk-aigw-bbbb', 0, 0)")
        assert await store.migrate() == [2, 3, 4]
        assert sorted((await store.key_hashes(None))[0]) == ["h1", "h2"]  # keys made before it: in a full read
        grant = await store.grant_by_hash("h1")
        assert grant is not None and grant.until is None and grant.key.previous_hash is None
        assert grant.key.disabled_by is None and grant.project.disabled_by is None
        # who disabled it before is not known: the master key, so a tenant admin cannot enable it
        assert (await store.get_key("k2")).disabled_by == BY_MASTER  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_grant_joins_key_project_and_tenant(db: SqlDatabase) -> None:
    await _seed(db)
    grant = await db.grant_by_hash("h1")
    assert grant is not None
    assert (grant.key.id, grant.project.name, grant.tenant.name) == ("k1", "web", "acme")
    assert grant.key.limits == Limits(rpm=10, budget_usd=1, budget_period="daily")
    assert grant.key.allowed_models == ["mock"] and grant.tenant.limits.budget_usd == 50
    assert grant.usable(NOW)
    assert await db.grant_by_hash("nope") is None


async def test_projects_are_found_within_a_tenant_only(db: SqlDatabase) -> None:
    await _seed(db)
    assert (await db.find_project("web", "t2")).id == "p2"  # type: ignore[union-attr]
    assert await db.find_project("p2", "t1") is None
    with pytest.raises(AmbiguousName):  # the name is ambiguous across tenants
        await db.find_project("web", None)
    assert await db.find_project("p2", None) is not None and await db.find_project("nope", None) is None
    assert [k.id for k in await db.list_keys("t1", None)] == ["k1"]


async def test_a_name_taken_meanwhile_is_a_unique_violation_on_both_backends(db: SqlDatabase) -> None:
    """The admin API checks for a duplicate first; a concurrent create or rename between its check and the
    write must still come back as a conflict (a 409), not as the driver's own error (a 500)."""
    await _seed(db)
    with pytest.raises(UniqueViolation):
        await db.add_tenant(Tenant(id="t3", name="acme", created_at=NOW))
    globex = await db.get_tenant("t2")
    assert globex is not None
    globex.name = "acme"
    with pytest.raises(UniqueViolation):
        await db.save_tenant(globex)
    with pytest.raises(UniqueViolation):
        await db.add_project(Project(id="p3", tenant_id="t1", name="web", created_at=NOW))
    await db.add_project(Project(id="p3", tenant_id="t1", name="api", created_at=NOW))
    api = await db.get_project("p3")
    assert api is not None
    api.name = "web"
    with pytest.raises(UniqueViolation):
        await db.save_project(api)
    assert [t.name for t in await db.list_tenants()] == ["acme", "globex"]
    assert [p.name for p in await db.list_projects("t1")] == ["web", "api"]


async def test_key_changes_persist_and_bump_the_version(db: SqlDatabase) -> None:
    await _seed(db)
    key = await db.get_key("k1")
    assert key is not None
    key.revoked_at = NOW + 1
    key.limits = Limits(rpm=5)
    await db.save_key(key)
    before = await db.key_version()
    assert await db.bump_key_version() == before + 1
    grant = await db.grant_by_hash("h1")
    assert grant is not None and not grant.usable(NOW + 2) and grant.key.limits.rpm == 5


async def test_ledger_writes_are_idempotent_and_roll_up(db: SqlDatabase) -> None:
    await _seed(db)
    batch = [_rec(i) for i in range(10)] + [_rec(i, key="k2", tenant="t2", project="p2", cost=0.5) for i in range(3)]
    assert await db.write(batch) == 13
    assert await db.write([*batch[:5], _rec(99)]) == 1  # a replay adds only the new row
    assert await db.count() == 14
    by_key = {r["key"]: r for r in await db.spend(SpendQuery(group_by="key"))}
    assert by_key["k1"]["requests"] == 11 and by_key["k1"]["cost_usd"] == pytest.approx(0.11)
    assert by_key["k1"]["key_prefix"] == "sk-aigw-aaaa" and by_key["k1"]["cached_tokens"] == 22
    assert by_key["k2"]["cost_usd"] == pytest.approx(1.5)
    only_t1 = await db.spend(SpendQuery(group_by="tenant", tenant_id="t1"))
    assert [(r["tenant"], r["tenant_name"]) for r in only_t1] == [("t1", "acme")]
    by_project = await db.spend(SpendQuery(group_by="project"))
    assert [(r["project"], r["project_name"]) for r in by_project] == [("p2", "web"), ("p1", "web")]


async def test_reports_filter_by_day_and_group_by_day_and_model(db: SqlDatabase) -> None:
    await _seed(db)
    await db.write([_rec(1, ts=NOW - 86400), _rec(2), _rec(3, model="gpt-4o", status=429)])
    days = await db.spend(SpendQuery(group_by="day", tenant_id="t1"))
    assert [r["requests"] for r in days] == [1, 2]
    today = window_of("daily", NOW)
    models = await db.spend(SpendQuery(group_by="model", since_day=today, until_day=today))
    assert {r["model"]: r["errors"] for r in models} == {"mock": 0, "gpt-4o": 1}


async def test_request_pages_are_newest_first_and_tenant_scoped(db: SqlDatabase) -> None:
    await _seed(db)
    await db.write([_rec(i, ts=NOW + i) for i in range(5)] + [_rec(9, key="k2", tenant="t2", project="p2")])
    page = await db.requests(RequestQuery(tenant_id="t1", limit=3))
    assert [r["request_id"] for r in page] == ["req_4", "req_3", "req_2"]
    older = await db.requests(RequestQuery(tenant_id="t1", before_ts=page[-1]["ts_end"], limit=10))
    assert [r["request_id"] for r in older] == ["req_1", "req_0"]
    assert page[0]["cost_usd"] == pytest.approx(0.01) and page[0]["stream"] is False
    assert await db.request("req_9", "t1") is None  # another tenant's request
    assert (await db.request("req_9", "t2"))["key_id"] == "k2"  # type: ignore[index]


async def test_budgeted_spend_sums_the_current_window_from_rollups(db: SqlDatabase) -> None:
    await _seed(db)
    await db.write([_rec(1, cost=0.25), _rec(2, cost=0.25), _rec(3, cost=0.4, ts=NOW - 86400)])
    spent = await db.budgeted_spend(NOW)
    assert spent[("key", "k1", window_of("daily", NOW))] == to_nano(0.5)  # yesterday is another window
    assert spent[("tenant", "t1", window_of("monthly", NOW))] == to_nano(0.9)
    assert ("key", "k2", "total") not in spent  # no budget, no counter
    assert NANO == 1_000_000_000


async def test_budgeted_spend_reads_keys_in_pages_and_misses_none(db: SqlDatabase,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A reseed reads keys a page at a time (a lookup waits one page, not the whole table): every budgeted,
    unrevoked key of every page is counted, keys without a budget or revoked are not."""
    monkeypatch.setattr(database, "BUDGETED_PAGE", 3)
    await _seed(db)
    budget = Limits(budget_usd=1.0, budget_period="daily")
    for i in range(8):
        await db.add_key(ApiKey(id=f"kb{i}", tenant_id="t1", project_id="p1", key_hash=f"hb{i}", prefix="sk-aigw-b",
                                limits=budget if i != 4 else Limits(), created_at=NOW,
                                revoked_at=NOW if i == 6 else None))
    await db.write([_rec(i, key=f"kb{i}", cost=0.01 * (i + 1)) for i in range(8)])
    spent = await db.budgeted_spend(NOW)
    window = window_of("daily", NOW)
    assert {k[1]: v for k, v in spent.items() if k[0] == "key" and k[1].startswith("kb")} == {
        f"kb{i}": to_nano(0.01 * (i + 1)) for i in (0, 1, 2, 3, 5, 7)}
    assert ("key", "kb4", window) not in spent and ("key", "kb6", window) not in spent


async def test_keys_come_in_pages_oldest_first(db: SqlDatabase) -> None:
    await _seed(db)
    for i, at in enumerate([NOW + 5, NOW + 3, NOW + 3, NOW + 4]):  # two made in the same instant: ids order them
        await db.add_key(ApiKey(id=f"kp{i}", tenant_id="t1", project_id="p1", key_hash=f"hp{i}",
                                prefix="sk-aigw-pppp", created_at=at))
    everything = [k.id for k in await db.list_keys("t1", None)]
    assert everything == ["k1", "kp1", "kp2", "kp3", "kp0"]
    first = await db.list_keys("t1", None, limit=2)
    second = await db.list_keys("t1", None, limit=2, after=first[-1])
    third = await db.list_keys("t1", None, limit=2, after=second[-1])
    assert [k.id for k in first + second + third] == everything and len(third) == 1
    assert await db.list_keys("t1", None, limit=2, after=third[-1]) == []


async def test_tenants_and_projects_come_in_pages_too(db: SqlDatabase) -> None:
    await _seed(db)
    await db.add_tenant(Tenant(id="t0", name="initech", created_at=NOW))  # same instant as t1, t2: by id
    await db.add_project(Project(id="p3", tenant_id="t1", name="api", created_at=NOW - 1))
    first = await db.list_tenants(limit=2)
    assert [t.id for t in first] == ["t0", "t1"]
    assert [t.id for t in await db.list_tenants(limit=2, after=first[-1])] == ["t2"]
    assert [p.id for p in await db.list_projects("t1", limit=1)] == ["p3"]
    page = await db.list_projects(None, limit=5, after=(await db.list_projects(None, limit=1))[0])
    assert [p.id for p in page] == ["p1", "p2"]


async def test_a_save_writes_only_the_columns_named_and_never_clears_a_revocation(db: SqlDatabase) -> None:
    await _seed(db)
    stale = await db.get_key("k1")  # read by a PATCH that then waits for its body
    fresh = await db.get_key("k1")
    assert stale is not None and fresh is not None
    fresh.revoked_at = NOW + 1
    await db.save_key(fresh, {"revoked_at", "previous_hash", "previous_until"})
    stale.limits = Limits(rpm=5)
    await db.save_key(stale, {"limits"})
    await db.save_key(stale)  # every column, as an old caller would: the revocation stays all the same
    saved = await db.get_key("k1")
    assert saved is not None and saved.revoked_at == NOW + 1 and saved.limits.rpm == 5
    tenant = await db.get_tenant("t1")
    assert tenant is not None
    tenant.enabled, tenant.name = False, "renamed-elsewhere"
    await db.save_tenant(tenant, {"enabled"})
    await db.save_tenant(tenant, set())  # an empty PATCH
    again = await db.get_tenant("t1")
    assert again is not None and not again.enabled and again.name == "acme"


async def test_a_tenant_admins_write_never_enables_what_the_master_key_disabled(db: SqlDatabase) -> None:
    """A tenant admin's call that read a project or key before the master key disabled it must not enable it
    (nor, disabling it too, make the disabling its own): the UPDATE itself keeps the master's."""
    await _seed(db)
    stale_project, stale_key = await db.get_project("p1"), await db.get_key("k1")
    assert stale_project is not None and stale_key is not None
    for save, item in ((db.save_project, await db.get_project("p1")), (db.save_key, await db.get_key("k1"))):
        item.enabled, item.disabled_by = False, BY_MASTER  # type: ignore[union-attr]
        await save(item, {"enabled", "disabled_by"})  # type: ignore[operator]
    for save, stale in ((db.save_project, stale_project), (db.save_key, stale_key)):
        stale.enabled, stale.disabled_by = False, "key_admin"
        await save(stale, {"enabled", "disabled_by"}, tenant_admin=True)  # type: ignore[operator]
        stale.enabled, stale.disabled_by = True, None
        await save(stale, {"enabled", "disabled_by", "name"}, tenant_admin=True)  # type: ignore[operator]
    project, key = await db.get_project("p1"), await db.get_key("k1")
    assert project is not None and key is not None
    assert (project.enabled, project.disabled_by, key.enabled, key.disabled_by) == (False, BY_MASTER, False, BY_MASTER)
    grant = await db.grant_by_hash("h1")
    assert grant is not None and not grant.usable(NOW)
    for save, item in ((db.save_project, project), (db.save_key, key)):  # the master's own write enables it
        item.enabled, item.disabled_by = True, None
        await save(item, {"enabled", "disabled_by"})  # type: ignore[operator]
    grant = await db.grant_by_hash("h1")
    assert grant is not None and grant.usable(NOW) and grant.key.disabled_by is None


async def test_enabled_states_read_each_project_and_its_tenant_in_one_query(db: SqlDatabase) -> None:
    await db.add_tenant(Tenant(id="ten_on", name="on"))
    await db.add_tenant(Tenant(id="ten_off", name="off", enabled=False))
    await db.add_project(Project(id="prj_ok", tenant_id="ten_on", name="ok"))
    await db.add_project(Project(id="prj_off", tenant_id="ten_on", name="off", enabled=False))
    await db.add_project(Project(id="prj_under", tenant_id="ten_off", name="under"))
    states = await db.enabled_states(["prj_ok", "prj_off", "prj_under", "prj_ok", "prj_gone"])
    assert states == {"prj_ok": (True, True), "prj_off": (False, True), "prj_under": (True, False)}
    assert await db.enabled_states([]) == {}
