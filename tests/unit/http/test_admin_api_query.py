"""The tenancy admin API's query strings, read strictly: a list filter misspelt, given twice or left empty is a
400 naming it (never every tenant's list), and the documented ones still narrow and page the lists; the other
endpoints take none, so any is a 400 and the change is not made (``rotate?grace_s=60`` rotated with no grace)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from aigw.http.admin_api import AdminApi
from aigw.http.admin_guard import guarded
from aigw.http.auth import Authenticator
from aigw.http.request import HttpRequest
from aigw.stores.base import ApiKey, Project, Tenant
from aigw.stores.database import SqlDatabase
from tests.unit.http.admin_support import admin_api, seeded_db

MASTER = "mk-admin-query"
Handler = Callable[[HttpRequest, Any], Awaitable[None]]


async def _two_tenants(store: SqlDatabase) -> None:
    for tid, name in (("ten_a", "alpha"), ("ten_b", "beta")):
        await store.add_tenant(Tenant(id=tid, name=name))
        await store.add_project(Project(id=f"prj_{name}", tenant_id=tid, name=f"web-{name}"))
        for n in (1, 2):
            await store.add_key(ApiKey(id=f"key_{name}{n}", tenant_id=tid, project_id=f"prj_{name}",
                                       key_hash=f"h-{name}{n}", prefix="sk-aigw-xxxx"))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqlDatabase]:
    async with seeded_db(tmp_path, _two_tenants) as store:
        yield store


@pytest.fixture
def api(db: SqlDatabase) -> AdminApi:
    return admin_api(db)


async def call(handler: Handler, method: str, path: str, query: bytes = b"",
               body: dict[str, Any] | None = None) -> tuple[int, dict[str, str], Any]:
    """``handler``'s answer to ``method path?query`` sent with the master key: status, headers, JSON body."""
    raw = orjson.dumps(body) if body is not None else b""
    headers = [(b"authorization", f"Bearer {MASTER}".encode()), (b"content-type", b"application/json"),
               (b"content-length", str(len(raw)).encode())]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await handler(HttpRequest({"type": "http", "method": method, "path": path, "query_string": query,
                               "headers": headers}, receive), send)
    got = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], got, orjson.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def handler(api: AdminApi, name: str) -> Handler:
    return guarded(Authenticator(MASTER), getattr(api, name))


@pytest.mark.parametrize(("endpoint", "query", "param", "words"), [
    ("list_tenants", b"limt=1", "limt", "unknown parameter; known: limit, after"),
    ("list_tenants", b"tenant=alpha", "tenant", "unknown parameter"),  # tenants are not filtered by tenant
    ("list_tenants", b"limit=1&limit=5", "limit", "given twice"),
    ("list_tenants", b"after=", "after", "empty"),  # read as absent: the first page
    ("list_projects", b"tenants=alpha", "tenants", "unknown parameter; known: tenant, limit, after"),
    ("list_projects", b"tenant_id=ten_a", "tenant_id", "unknown parameter; did you mean `tenant`?"),
    ("list_projects", b"tenant=alpha&tenant=beta", "tenant", "given twice"),  # the last one won
    ("list_projects", b"tenant=", "tenant", "empty"),  # an unset shell variable: every tenant's projects
    ("list_keys", b"projet=web-alpha", "projet", "unknown parameter; known: tenant, project, limit, after"),
    ("list_keys", b"project_id=prj_alpha", "project_id", "did you mean `project`?"),
    ("list_keys", b"cursor=key_alpha1", "cursor", "did you mean `after`?"),
    ("list_keys", b"tenant=alpha&project=web-alpha&tenant=alpha", "tenant", "given twice"),
    ("list_keys", b"tenant=alpha&project=", "project", "empty"),
    ("list_keys", b"tenant=%20", "tenant", "empty"),
    ("list_keys", b"limit", "limit", "empty"),
])
async def test_a_list_parameter_that_would_be_ignored_is_a_400_naming_it(api: AdminApi, endpoint: str,
                                                                         query: bytes, param: str,
                                                                         words: str) -> None:
    path = "/admin/" + endpoint.removeprefix("list_")
    status, headers, body = await call(handler(api, endpoint), "GET", path, query)
    error = body["error"]
    assert (status, headers["content-type"], error["type"], error["param"]) == (
        400, "application/json", "invalid_request_error", param)
    assert error["message"].startswith(f"{param}: ") and words in error["message"], error["message"]


async def _ids(api: AdminApi, endpoint: str, query: bytes) -> tuple[list[str], bool]:
    status, _, body = await call(handler(api, endpoint), "GET", "/admin/" + endpoint.removeprefix("list_"), query)
    assert status == 200, body
    return [item["id"] for item in body["data"]], body["has_more"]


async def test_the_documented_parameters_still_narrow_and_page_the_lists(api: AdminApi) -> None:
    assert await _ids(api, "list_tenants", b"") == (["ten_a", "ten_b"], False)
    assert await _ids(api, "list_tenants", b"limit=1") == (["ten_a"], True)
    assert await _ids(api, "list_tenants", b"limit=1&after=ten_a") == (["ten_b"], False)
    assert await _ids(api, "list_projects", b"tenant=beta") == (["prj_beta"], False)
    assert await _ids(api, "list_projects", b"tenant=ten_a&limit=5") == (["prj_alpha"], False)
    assert await _ids(api, "list_keys", b"tenant=beta") == (["key_beta1", "key_beta2"], False)
    assert await _ids(api, "list_keys", b"project=web-alpha&limit=1") == (["key_alpha1"], True)
    assert await _ids(api, "list_keys", b"tenant=alpha&project=prj_alpha&limit=1&after=key_alpha1") == (
        ["key_alpha2"], False)


@pytest.mark.parametrize(("endpoint", "method", "path", "query", "body"), [
    ("key_item", "POST", "/admin/keys/key_alpha1/rotate", b"grace_s=60", None),  # rotated with no grace
    ("key_item", "POST", "/admin/keys/key_alpha1/revoke", b"dry_run=1", None),
    ("key_item", "DELETE", "/admin/keys/key_alpha1", b"key=key_alpha1&key=key_alpha1", None),
    ("key_item", "PATCH", "/admin/keys/key_alpha1", b"name=", {"name": "renamed"}),
    ("tenant_item", "DELETE", "/admin/tenants/alpha", b"dry_run=1", None),  # disabled the tenant
    ("tenant_item", "PATCH", "/admin/tenants/alpha", b"tenant=", {"name": "renamed"}),
    ("project_item", "DELETE", "/admin/projects/prj_alpha", b"cascade=false", None),
    ("create_tenant", "POST", "/admin/tenants", b"name=gamma", {"name": "gamma"}),
    ("create_project", "POST", "/admin/projects", b"tenant=alpha", {"tenant": "alpha", "name": "batch"}),
    ("create_key", "POST", "/admin/keys", b"project=web-alpha", {"project": "web-alpha"}),
    ("key_item", "GET", "/admin/keys/key_alpha1", b"tenant=beta", None),
])
async def test_an_endpoint_without_parameters_refuses_any_and_changes_nothing(
        api: AdminApi, db: SqlDatabase, endpoint: str, method: str, path: str, query: bytes,
        body: dict[str, Any] | None) -> None:
    before = await _everything(db)
    status, _, answer = await call(handler(api, endpoint), method, path, query, body)
    param = query.partition(b"=")[0].decode()
    assert (status, answer["error"]["type"], answer["error"]["param"]) == (400, "invalid_request_error", param)
    assert answer["error"]["message"].startswith(f"{param}: "), answer["error"]["message"]
    assert await _everything(db) == before


async def _everything(db: SqlDatabase) -> tuple[list[Tenant], list[Project], list[ApiKey]]:
    return await db.list_tenants(None, None), await db.list_projects(None, None, None), \
        await db.list_keys(None, None, None, None)


async def test_the_same_calls_without_a_query_still_work(api: AdminApi, db: SqlDatabase) -> None:
    status, _, rotated = await call(handler(api, "key_item"), "POST", "/admin/keys/key_alpha1/rotate")
    assert status == 200 and rotated["key"].startswith("sk-")
    status, _, disabled = await call(handler(api, "tenant_item"), "DELETE", "/admin/tenants/beta")
    assert status == 200 and disabled["enabled"] is False
    status, _, made = await call(handler(api, "create_key"), "POST", "/admin/keys", b"", {"project": "web-alpha"})
    assert status == 201 and made["project_id"] == "prj_alpha"


async def test_a_projects_after_is_read_in_the_tenant_the_list_is_filtered_by(api: AdminApi, db: SqlDatabase) -> None:
    """``?tenant=alpha&after=shared`` with a `shared` project in both tenants was a 409 ``ambiguous_name``, though
    the list names its tenant (as a list's ``project=`` filter is read); another tenant's project is a 404."""
    for tid, name in (("ten_a", "alpha"), ("ten_b", "beta")):
        await db.add_project(Project(id=f"prj_shared_{name}", tenant_id=tid, name="shared", created_at=1.0))
    await db.add_project(Project(id="prj_last_alpha", tenant_id="ten_a", name="last", created_at=2.0))
    assert await _ids(api, "list_projects", b"tenant=alpha&after=shared") == (["prj_last_alpha"], False)
    status, _, body = await call(handler(api, "list_projects"), "GET", "/admin/projects",
                                 b"tenant=alpha&after=prj_shared_beta")
    assert (status, body["error"]["code"]) == (404, "project_not_found")


async def test_a_keys_after_is_read_in_the_tenant_and_project_the_list_is_filtered_by(api: AdminApi) -> None:
    """``?tenant=alpha&after=key_beta1`` (a cursor kept from another list) answered a page of alpha's keys from
    where beta's key sat in time, skipping or repeating keys silently; as a project list's ``after``, a key that
    is not in the list (another tenant's, or another project's) is a 404, and one in it still pages."""
    for query in (b"tenant=alpha&after=key_beta1", b"project=prj_alpha&after=key_beta1",
                  b"tenant=beta&project=prj_beta&after=key_alpha1"):
        status, _, body = await call(handler(api, "list_keys"), "GET", "/admin/keys", query)
        assert (status, body["error"]["code"]) == (404, "key_not_found"), query
    assert await _ids(api, "list_keys", b"project=prj_alpha&after=key_alpha1") == (["key_alpha2"], False)
    assert await _ids(api, "list_keys", b"after=key_alpha2") == (["key_beta1", "key_beta2"], False)
