"""GET /admin/spend as an operator reads it: a report cut at ``limit`` rows says so, and its total is the whole bill."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aigw.http.admin_guard import Download
from aigw.http.admin_spend import SpendApi
from aigw.http.request import HttpRequest
from aigw.pipeline.context import Principal
from aigw.stores.base import Project, SpendRecord, Tenant
from tests.unit.http.admin_support import admin_api, migrated_db

MASTER = Principal(key_id="master", is_admin=True)
COSTS = {"key_a": 3_000_000_000, "key_b": 2_000_000_000, "key_c": 1_000_000_000}  # $3, $2, $1


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[SpendApi]:
    db = await migrated_db(tmp_path)
    now = time.time()
    await db.write([SpendRecord(request_id=f"req_{k}", id=f"sp_{k}", ts_start=now, ts_end=now, tenant_id="ten_a",
                                project_id="prj_a", key_id=k, model="m", cost_nano=c) for k, c in COSTS.items()])
    try:
        yield SpendApi(admin_api(db))  # type: ignore[arg-type]
    finally:
        await db.close()


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

