"""The admin API's lookups for a tenant admin key: another tenant's tenant, project or key is a 404 exactly as
one that does not exist, and its row is never read (so the time of the answer does not tell them apart)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aigw import errors
from aigw.stores.base import ApiKey, Project, Tenant
from aigw.stores.database import SqlDatabase
from tests.unit.http.admin_support import admin_api, seeded_db

A, B = "ten_aaaa", "ten_bbbb"


async def _two_tenants(store: SqlDatabase) -> None:
    for tid, name in ((A, "alpha"), (B, "beta")):
        await store.add_tenant(Tenant(id=tid, name=name))
        await store.add_project(Project(id=f"prj_{name}", tenant_id=tid, name=f"web-{name}"))
        await store.add_key(ApiKey(id=f"key_{name}", tenant_id=tid, project_id=f"prj_{name}",
                                   key_hash=f"h-{name}", prefix="sk-aigw-xxxx"))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqlDatabase]:
    async with seeded_db(tmp_path, _two_tenants) as store:
        yield store


def _recording(db: SqlDatabase) -> list[dict[str, Any]]:
    """Every row the database hands to the process from now on."""
    seen: list[dict[str, Any]] = []
    fetch = db.sql.fetch

    async def recorded(sql: str, *args: Any) -> Any:
        rows = await fetch(sql, *args)
        seen.extend(rows)
        return rows

    db.sql.fetch = recorded  # type: ignore[method-assign]
    return seen


def _of_tenant_b(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if B in (r.get("id"), r.get("tenant_id"))]


@pytest.mark.parametrize("kind,other,missing", [
    ("tenant", B, "ten_none"), ("tenant", "beta", "gamma"),
    ("project", "prj_beta", "prj_none"), ("project", "web-beta", "web-none"),
    ("key", "key_beta", "key_none"),
])
async def test_another_tenants_object_is_a_404_like_a_missing_one_and_its_row_is_never_read(
        db: SqlDatabase, kind: str, other: str, missing: str) -> None:
    api = admin_api(db)
    lookup = getattr(api, kind)
    seen = _recording(db)
    answers = []
    for ident in (other, missing):
        with pytest.raises(errors.NotFound) as caught:
            await lookup(ident, A)
        answers.append((caught.value.status, caught.value.code, str(caught.value).replace(ident, "<id>")))
    assert answers[0] == answers[1]
    assert _of_tenant_b(seen) == []


async def test_a_tenant_admin_still_finds_its_own_by_id_and_name(db: SqlDatabase) -> None:
    api = admin_api(db)
    assert (await api.tenant(A, A)).id == A and (await api.tenant("alpha", A)).id == A
    assert (await api.project("web-alpha", A)).id == "prj_alpha"
    assert (await api.key("key_alpha", A)).tenant_id == A
    assert (await api.key("key_beta", None)).tenant_id == B  # the master key sees every tenant
    assert (await api.tenant("beta", None)).id == B
