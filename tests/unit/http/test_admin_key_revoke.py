"""Revoking a key drops its budget counters (a ``total`` one would otherwise stay in Redis for good), also when
the revoke is repeated because the first call could not tell other replicas; a revoked key's counters are never
made again by a later change of its limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from aigw import errors
from aigw.http.admin_api import AdminApi, BudgetChange
from aigw.http.admin_models import KeyPatch
from aigw.http.admin_patch import patch_key
from aigw.http.request import HttpRequest
from aigw.pipeline.context import Principal
from aigw.stores.base import ApiKey, Limits, Project, Tenant
from aigw.stores.database import SqlDatabase
from aigw.types import SystemClock
from tests.unit.http.admin_support import migrated_db

MASTER = Principal(key_id="master", is_admin=True)


class _FailingOnce:
    """A key version whose first bump fails (the store is away), as ``AdminApi._changed`` reports with a 503."""

    def __init__(self) -> None:
        self.bumps = 0

    async def get(self) -> int:
        return 0

    async def bump(self) -> int:
        self.bumps += 1
        if self.bumps == 1:
            raise ConnectionError("redis away")
        return self.bumps


def _request(method: str, path: str, body: dict[str, Any] | None = None) -> HttpRequest:
    raw = orjson.dumps(body) if body is not None else b""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    return HttpRequest({"type": "http", "method": method, "path": path, "headers": headers}, receive)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqlDatabase]:
    store = await migrated_db(tmp_path)
    await store.add_tenant(Tenant(id="ten_a", name="alpha"))
    await store.add_project(Project(id="prj_a", tenant_id="ten_a", name="web"))
    await store.add_key(ApiKey(id="key_a", tenant_id="ten_a", project_id="prj_a", key_hash="h-a",
                               prefix="sk-aigw-xxxx", limits=Limits(budget_usd=5.0, budget_period="total")))
    try:
        yield store
    finally:
        await store.close()


async def test_a_revoke_repeated_after_a_failed_version_bump_still_drops_the_keys_counters(db: SqlDatabase) -> None:
    forgotten: list[str] = []

    async def on_revoke(key: ApiKey) -> None:
        forgotten.append(key.id)

    api = AdminApi(db, _FailingOnce(), SystemClock(), lambda: None, on_revoke=on_revoke)  # type: ignore[arg-type]
    with pytest.raises(errors.Unavailable):  # saved, but "repeat the call": other replicas were not told
        await api.key_item(_request("POST", "/admin/keys/key_a/revoke"), MASTER)
    status, _ = await api.key_item(_request("POST", "/admin/keys/key_a/revoke"), MASTER)  # as the 503 says
    assert status == 200
    assert forgotten and set(forgotten) == {"key_a"}


async def test_a_revoked_keys_budget_is_not_seeded_again_by_a_patch(db: SqlDatabase) -> None:
    seeded: list[BudgetChange] = []
    forgotten: list[str] = []

    async def on_budget(change: BudgetChange) -> None:
        seeded.append(change)

    async def on_revoke(key: ApiKey) -> None:
        forgotten.append(key.id)

    api = AdminApi(db, _FailingOnce(), SystemClock(), lambda: None, on_budget=on_budget,  # type: ignore[arg-type]
                   on_revoke=on_revoke)
    api.version.bumps = 1  # type: ignore[attr-defined]  # bumps work from here on
    await api.key_item(_request("POST", "/admin/keys/key_a/revoke"), MASTER)
    with pytest.raises(errors.InvalidRequest):  # a revoked key's budget cannot change at all
        await api.key_item(_request("PATCH", "/admin/keys/key_a", {"budget_usd": 7.0}), MASTER)
    status, _ = await api.key_item(_request("PATCH", "/admin/keys/key_a", {"name": "gone"}), MASTER)
    assert status == 200
    assert seeded == []  # a seed writes a `total` window with no TTL: it would stay in Redis for good
    assert forgotten[-1] == "key_a"


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("POST", "/admin/keys/key_a/revoke", {"grace_s": 3600}, "grace_s"),
    ("DELETE", "/admin/keys/key_a", {"at": "2026-12-31"}, "at"),
    ("DELETE", "/admin/projects/prj_a", {"enabled": True}, "enabled"),
    ("DELETE", "/admin/tenants/ten_a", {"dry_run": True}, "dry_run"),
])
async def test_a_body_sent_to_a_call_that_takes_none_is_a_400_naming_its_field_and_nothing_changes(
        db: SqlDatabase, method: str, path: str, body: dict[str, Any], field: str) -> None:
    """``revoke {"grace_s": 3600}`` revoked at once: the field was ignored, as a query string's were once."""
    api = AdminApi(db, _FailingOnce(), SystemClock(), lambda: None)  # type: ignore[arg-type]
    handler = {"keys": api.key_item, "projects": api.project_item, "tenants": api.tenant_item}[path.split("/")[2]]
    with pytest.raises(errors.InvalidRequest) as info:
        await handler(_request(method, path, body), MASTER)
    assert info.value.param == field and "unknown field" in info.value.message
    key, project, tenant = await db.get_key("key_a", None), await db.get_project("prj_a"), await db.get_tenant("ten_a")
    assert key is not None and key.revoked_at is None
    assert project is not None and project.enabled and tenant is not None and tenant.enabled


async def test_a_call_that_takes_no_body_still_works_without_one_or_with_an_empty_object(db: SqlDatabase) -> None:
    api = AdminApi(db, _FailingOnce(), SystemClock(), lambda: None)  # type: ignore[arg-type]
    api.version.bumps = 1  # type: ignore[attr-defined]  # bumps work from here on
    assert (await api.key_item(_request("POST", "/admin/keys/key_a/revoke", {}), MASTER))[0] == 200
    assert (await api.project_item(_request("DELETE", "/admin/projects/prj_a"), MASTER))[0] == 200
    assert (await api.tenant_item(_request("DELETE", "/admin/tenants/ten_a", {}), MASTER))[0] == 200


async def test_enabling_a_revoked_key_is_a_400_not_a_200_that_leaves_it_revoked(db: SqlDatabase) -> None:
    api = AdminApi(db, _FailingOnce(), SystemClock(), lambda: None)  # type: ignore[arg-type]
    api.version.bumps = 1  # type: ignore[attr-defined]  # bumps work from here on
    await api.key_item(_request("POST", "/admin/keys/key_a/revoke"), MASTER)
    with pytest.raises(errors.InvalidRequest) as info:
        await api.key_item(_request("PATCH", "/admin/keys/key_a", {"enabled": True}), MASTER)
    assert (info.value.param, info.value.code) == ("enabled", "key_revoked")
    status, out = await api.key_item(_request("PATCH", "/admin/keys/key_a", {"name": "old ci key"}), MASTER)
    assert status == 200 and out["status"] == "revoked"  # a revoked key's name and notes may still change


@pytest.mark.parametrize("body", [
    {"rpm": 60}, {"tpm": 1000}, {"max_parallel": 2}, {"budget_usd": 7.0}, {"budget_period": "daily"},
    {"rpm": None}, {"models": ["mock"]}, {"models": None}, {"expires_at": "2099-01-01"}, {"expires_at": None},
    {"enabled": False}, {"name": "old ci key", "rpm": 60},
], ids=lambda body: ",".join(body))
async def test_a_patch_of_anything_but_name_and_metadata_on_a_revoked_key_is_refused_and_changes_nothing(
        db: SqlDatabase, body: dict[str, Any]) -> None:
    """It answered 200 and stored the new limits on a key no call can use: the docs say a revoked key's name and
    metadata may still change, nothing else."""
    api = AdminApi(db, _FailingOnce(), SystemClock(), lambda: None)  # type: ignore[arg-type]
    api.version.bumps = 1  # type: ignore[attr-defined]  # bumps work from here on
    await api.key_item(_request("POST", "/admin/keys/key_a/revoke"), MASTER)
    before = await db.get_key("key_a", None)
    with pytest.raises(errors.InvalidRequest) as info:
        await api.key_item(_request("PATCH", "/admin/keys/key_a", body), MASTER)
    assert (info.value.status, info.value.code) == (400, "key_revoked")
    assert info.value.param in body and info.value.param != "name"
    assert "revoked" in info.value.message and "name and metadata" in info.value.message
    assert await db.get_key("key_a", None) == before
    status, out = await api.key_item(_request("PATCH", "/admin/keys/key_a", {"metadata": {"note": "left"}}), MASTER)
    assert status == 200 and out["metadata"] == {"note": "left"} and out["status"] == "revoked"


def test_the_refusal_holds_for_a_key_revoked_after_the_patch_read_it() -> None:
    """The check runs on the key as saved when the PATCH writes (under its row lock), not as it was read: a
    revoke that lands while the PATCH waits for its body is not undone by new limits."""
    revoked = ApiKey(id="key_a", tenant_id="ten_a", project_id="prj_a", key_hash="h-a", prefix="sk-aigw-xxxx",
                     revoked_at=1.0)
    with pytest.raises(errors.InvalidRequest) as info:
        patch_key(revoked, KeyPatch.model_validate({"rpm": 5}), MASTER, None)
    assert (info.value.code, info.value.param, revoked.limits.rpm) == ("key_revoked", "rpm", None)
