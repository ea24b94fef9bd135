"""A key's ``status`` in the admin API: whether it works now, or why not, as a call with it would be refused.

``enabled: true`` alone said nothing of a project or tenant switched off: a key listed as enabled was refused
on every call, and the list did not say why."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aigw.http.admin_api import AdminApi
from aigw.stores.base import ApiKey, Project, Tenant
from aigw.stores.database import SqlDatabase
from tests.unit.http.admin_support import admin_api, seeded_db
from tests.unit.http.test_admin_api_query import call, handler

NOW = 1_800_000_000.0


async def _every_state(store: SqlDatabase) -> None:
    await store.add_tenant(Tenant(id="ten_on", name="on"))
    await store.add_tenant(Tenant(id="ten_off", name="off", enabled=False))
    await store.add_project(Project(id="prj_on", tenant_id="ten_on", name="web"))
    await store.add_project(Project(id="prj_off", tenant_id="ten_on", name="batch", enabled=False))
    await store.add_project(Project(id="prj_under", tenant_id="ten_off", name="web"))
    keys: list[tuple[str, str, dict[str, Any]]] = [
        ("key_active", "prj_on", {}), ("key_revoked", "prj_on", {"revoked_at": NOW - 5, "enabled": False}),
        ("key_expired", "prj_on", {"expires_at": 1.0}), ("key_disabled", "prj_on", {"enabled": False}),
        ("key_projoff", "prj_off", {}), ("key_tenoff", "prj_under", {}),
    ]
    for kid, pid, extra in keys:
        tid = "ten_off" if pid == "prj_under" else "ten_on"
        await store.add_key(ApiKey(id=kid, tenant_id=tid, project_id=pid, key_hash=f"h-{kid}", prefix="sk-aigw-xx",
                                   **extra))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqlDatabase]:
    async with seeded_db(tmp_path, _every_state) as store:
        yield store


@pytest.fixture
def api(db: SqlDatabase) -> AdminApi:
    return admin_api(db)


async def test_the_key_list_says_which_keys_work_and_why_the_others_do_not(api: AdminApi) -> None:
    status, _, body = await call(handler(api, "list_keys"), "GET", "/admin/keys")
    assert status == 200
    got = {k["id"]: (k["status"], k["enabled"]) for k in body["data"]}
    assert got == {"key_active": ("active", True), "key_revoked": ("revoked", False),
                   "key_expired": ("expired", True), "key_disabled": ("disabled", False),
                   "key_projoff": ("project_disabled", True), "key_tenoff": ("tenant_disabled", True)}


async def test_one_key_and_a_change_to_it_carry_its_status(api: AdminApi, db: SqlDatabase) -> None:
    status, _, body = await call(handler(api, "key_item"), "GET", "/admin/keys/key_projoff")
    assert (status, body["status"], body["enabled"]) == (200, "project_disabled", True)
    await db.save_project(Project(id="prj_off", tenant_id="ten_on", name="batch", enabled=True), {"enabled"})
    status, _, body = await call(handler(api, "key_item"), "PATCH", "/admin/keys/key_projoff", body={"name": "n"})
    assert (status, body["status"]) == (200, "active")
    status, _, body = await call(handler(api, "create_key"), "POST", "/admin/keys", body={"project": "prj_under"})
    assert (status, body["status"]) == (201, "tenant_disabled") and body["key"].startswith("sk-aigw-")
