"""GET /admin/spend as an operator reads it: a report cut at ``limit`` rows says so, and its total is the whole bill,
exact to the nano-dollar. On SQLite and PostgreSQL (a schema of the test's own, dropped after it)."""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aigw.http.admin_guard import Download
from aigw.http.admin_spend import SpendApi
from aigw.http.request import HttpRequest
from aigw.pipeline.context import Principal
from aigw.stores.base import NANO, Project, SpendRecord, Tenant
from aigw.stores.database import SqlDatabase, open_database
from tests.support.services import RUN_ID, pg_execute, postgres_dsn
from tests.unit.http.admin_support import admin_api, migrated_db

MASTER = Principal(key_id="master", is_admin=True)
COSTS = {"key_a": 3_000_000_000, "key_b": 2_000_000_000, "key_c": 1_000_000_000}  # $3, $2, $1


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlDatabase]:
    if request.param == "sqlite":
        db = await migrated_db(tmp_path)
    else:
        dsn, schema = postgres_dsn(), f"aigw_test_{RUN_ID}_{uuid.uuid4().hex[:6]}"
        await pg_execute(dsn, f'CREATE SCHEMA "{schema}"')
        db = open_database(f"{dsn}?search_path={schema}")
    try:
        if request.param == "postgres":
            await db.open()
            await db.migrate()
        yield db
    finally:
        await db.close()
        if request.param == "postgres":
            await pg_execute(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _write(db: SqlDatabase, costs: dict[str, int]) -> None:
    now = time.time()
    await db.write([SpendRecord(request_id=f"req_{k}", id=f"sp_{k}", ts_start=now, ts_end=now, tenant_id="ten_a",
                                project_id="prj_a", key_id=k, model="m", cost_nano=c) for k, c in costs.items()])


@pytest.fixture
async def api(store: SqlDatabase) -> SpendApi:
    await _write(store, COSTS)
    return SpendApi(admin_api(store))


async def _report(api: SpendApi, query: str) -> dict[str, Any]:
    req = HttpRequest({"method": "GET", "path": "/admin/spend", "query_string": query.encode(), "headers": []}, None)
    status, body = await api.spend(req, MASTER)
    assert status == 200 and isinstance(body, dict)
    return body


async def test_a_report_cut_at_its_limit_says_so_and_totals_the_whole_bill(api: SpendApi) -> None:
    cut = await _report(api, "group_by=key&limit=2")
    assert [r["key"] for r in cut["data"]] == ["key_a", "key_b"] and cut["has_more"] is True
    assert cut["total_cost_usd"] == 6.0  # not the $5 of the two rows shown


async def test_a_whole_report_has_no_more(api: SpendApi) -> None:
    whole = await _report(api, "group_by=key")
    assert len(whole["data"]) == 3 and whole["has_more"] is False and whole["total_cost_usd"] == 6.0


async def test_projects_and_tenants_are_named_beside_their_ids(api: SpendApi) -> None:
    db = api.admin.db
    await db.add_tenant(Tenant("ten_a", "acme"))
    await db.add_project(Project("prj_a", "ten_a", "search"))
    [by_project] = (await _report(api, "group_by=project"))["data"]
    assert (by_project["project"], by_project["project_name"]) == ("prj_a", "search")
    [by_tenant] = (await _report(api, "group_by=tenant"))["data"]
    assert (by_tenant["tenant"], by_tenant["tenant_name"]) == ("ten_a", "acme")
    csv_status, download = await api.spend(HttpRequest(
        {"method": "GET", "path": "/admin/spend", "query_string": b"group_by=tenant&format=csv", "headers": []},
        None), MASTER)
    assert csv_status == 200 and isinstance(download, Download)
    assert download.body.decode().startswith("tenant,tenant_name,requests,")



# beyond 2**53 nano-dollars (~$9M) a float no longer holds every nano: cost_usd * 1e9 is a few nanos off
BIG = {"key_x": 12_345_678_901_234_567, "key_y": 9_007_199_254_740_993, "key_z": 7}


@pytest.mark.parametrize("query", ["group_by=key", "group_by=key&limit=1", "group_by=model"])
async def test_the_total_is_the_exact_sum_of_the_rollups_nano_dollars(store: SqlDatabase, query: str) -> None:
    """Rows carry their rollups' ``cost_nano`` (an integer) and the total is its sum, not floats rounded back."""
    await _write(store, BIG)
    report = await _report(SpendApi(admin_api(store)), query)
    exact = sum(BIG.values())
    assert report["total_cost_nano"] == exact and report["total_cost_usd"] == exact / NANO
    if "limit" not in query:
        assert sum(r["cost_nano"] for r in report["data"]) == exact
    for row in report["data"]:
        assert type(row["cost_nano"]) is int and row["cost_usd"] == row["cost_nano"] / NANO
    if query == "group_by=key":
        assert {r["key"]: r["cost_nano"] for r in report["data"]} == BIG


async def test_the_csv_writes_each_rows_dollars_from_its_nano_dollars(store: SqlDatabase) -> None:
    await _write(store, {**BIG, "key_x": 21_352_878_155_975_560})  # as a float, 21352878.155975562
    status, download = await SpendApi(admin_api(store)).spend(HttpRequest(
        {"method": "GET", "path": "/admin/spend", "query_string": b"group_by=key&format=csv", "headers": []},
        None), MASTER)
    assert status == 200 and isinstance(download, Download)
    rows = {r["key"]: r for r in csv.DictReader(io.StringIO(download.body.decode()))}
    assert rows["key_x"]["cost_usd"] == "21352878.155975560" and rows["key_x"]["cost_nano"] == "21352878155975560"
    assert rows["key_z"]["cost_usd"] == "0.000000007"
