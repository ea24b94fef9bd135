"""Issue 4's isolation item, end to end: a key of tenant A never reads, lists, changes or spends tenant B's
records. A tenant admin key of A gets the same 404 for each of B's ids as for an id that does not exist, on
every admin route, lists without a filter answer A's rows only, and nothing of B changes; a plain key gets 403
on every admin route. On SQLite and on PostgreSQL (the scoping is in the stores' queries)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from aigw.cli.admin_client import AdminClient, AdminError
from tests.integration.tenancy_support import MASTER, chat_body, gateway_on, setup_key
from tests.support.gateway import RunningGateway


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with gateway_on(request.param, tmp_path_factory.mktemp("isolation")) as g:
        yield g


@pytest.fixture(scope="module")
def world(gw: RunningGateway) -> dict[str, Any]:
    """Tenants A and B, each with a project ``web``, a plain key and one request in the log and the ledger;
    A has a tenant admin key too."""
    admin = AdminClient(gw.url, MASTER)
    a_admin = setup_key(admin, "iso-a", role="tenant_admin")
    a_user = setup_key(admin, "iso-a")
    b_user = setup_key(admin, "iso-b")
    b_admin = setup_key(admin, "iso-b", role="tenant_admin")
    for key, rid in ((a_user, "req-iso-a"), (b_user, "req-iso-b")):
        openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0).chat.completions.create(
            **chat_body(), extra_headers={"x-request-id": rid})
    _wait_logged(admin, ["req-iso-a", "req-iso-b"])
    _wait_billed(admin, [a_user["id"], b_user["id"]])
    return {"admin": admin, "a_admin": a_admin, "a_user": a_user, "b_user": b_user, "b_admin": b_admin}


def _wait_logged(admin: AdminClient, request_ids: list[str]) -> None:
    deadline = time.monotonic() + 5
    for rid in request_ids:
        while True:
            try:
                admin.get(f"/admin/requests/{rid}")
                break
            except AdminError as err:
                assert err.status == 404 and time.monotonic() < deadline, f"{rid} not in the request log"
                time.sleep(0.05)


def _wait_billed(admin: AdminClient, key_ids: list[str]) -> None:
    deadline = time.monotonic() + 5
    for key_id in key_ids:
        while not admin.get("/admin/spend", key=key_id)["data"]:
            assert time.monotonic() < deadline, f"no spend for {key_id}"
            time.sleep(0.05)


def _call_billed(gw: RunningGateway, admin: AdminClient, key: dict[str, Any]) -> None:
    """A chat call with ``key`` that still works, once its ledger row is in (so a later test's snapshot of the
    bill does not see it land)."""
    def billed() -> int:
        return sum(r["requests"] for r in admin.get("/admin/spend", key=key["id"])["data"])

    before = billed()
    openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0).chat.completions.create(**chat_body())
    deadline = time.monotonic() + 5
    while billed() == before:
        assert time.monotonic() < deadline, f"no spend for {key['id']}"
        time.sleep(0.05)


def _b_as_saved(world: dict[str, Any]) -> list[Any]:
    """B's tenant, project, keys and bill as the master key reads them."""
    admin, b = world["admin"], world["b_user"]
    return [admin.get(f"/admin/tenants/{b['tenant_id']}"), admin.get(f"/admin/projects/{b['project_id']}"),
            admin.get("/admin/keys", tenant=b["tenant_id"]), admin.get("/admin/spend", tenant=b["tenant_id"])]


def _status(client: AdminClient, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None
            ) -> int:
    try:
        client.request(method, path, body, query)
    except AdminError as err:
        return err.status
    return 200


def test_a_tenant_admin_gets_404_for_every_id_of_another_tenant_and_changes_nothing(
        gw: RunningGateway, world: dict[str, Any]) -> None:
    a, b, b_admin = world["a_admin"], world["b_user"], world["b_admin"]
    as_a = AdminClient(gw.url, a["key"])
    before = _b_as_saved(world)
    tenant, project, key = b["tenant_id"], b["project_id"], b["id"]
    calls: list[tuple[str, str, Any, dict[str, Any] | None]] = [
        ("GET", f"/admin/tenants/{tenant}", None, None), ("GET", "/admin/tenants/iso-b", None, None),
        ("PATCH", f"/admin/tenants/{tenant}", {"rpm": 1}, None), ("DELETE", f"/admin/tenants/{tenant}", None, None),
        ("GET", "/admin/tenants", None, {"after": tenant}),
        ("GET", f"/admin/projects/{project}", None, None), ("PATCH", f"/admin/projects/{project}", {"rpm": 1}, None),
        ("DELETE", f"/admin/projects/{project}", None, None),
        ("GET", "/admin/projects", None, {"tenant": tenant}), ("GET", "/admin/projects", None, {"tenant": "iso-b"}),
        ("GET", "/admin/projects", None, {"after": project}),
        ("POST", "/admin/projects", {"name": "x", "tenant": tenant}, None),
        ("GET", f"/admin/keys/{key}", None, None), ("PATCH", f"/admin/keys/{key}", {"rpm": 1}, None),
        ("DELETE", f"/admin/keys/{key}", None, None), ("POST", f"/admin/keys/{key}/revoke", {}, None),
        ("POST", f"/admin/keys/{key}/rotate", {}, None), ("PATCH", f"/admin/keys/{b_admin['id']}", {"rpm": 1}, None),
        ("GET", "/admin/keys", None, {"tenant": tenant}), ("GET", "/admin/keys", None, {"project": project}),
        ("GET", "/admin/keys", None, {"after": key}), ("POST", "/admin/keys", {"project": project}, None),
        ("GET", "/admin/spend", None, {"tenant": tenant}), ("GET", "/admin/spend", None, {"project": project}),
        ("GET", "/admin/spend", None, {"key": key}), ("GET", "/admin/spend", None, {"key": "master"}),
        ("GET", "/admin/requests", None, {"key_id": key}), ("GET", "/admin/requests/req-iso-b", None, None),
        ("GET", "/admin/requests", None, {"tenant": tenant}), ("GET", "/admin/requests", None, {"tenant": "iso-b"}),
    ]
    for method, path, body, query in calls:
        assert _status(as_a, method, path, body, query) == 404, (method, path, query)
    assert _status(as_a, "GET", "/admin/deployments") == 403  # the operator's, no tenant's
    assert _b_as_saved(world) == before  # nothing of B changed
    _call_billed(gw, world["admin"], b)


def test_a_tenant_admins_lists_and_reports_hold_its_own_tenant_only(gw: RunningGateway,
                                                                    world: dict[str, Any]) -> None:
    a, a_user = world["a_admin"], world["a_user"]
    as_a = AdminClient(gw.url, a["key"])
    own = a["tenant_id"]
    assert [t["id"] for t in as_a.get("/admin/tenants")["data"]] == [own]
    assert {p["tenant_id"] for p in as_a.get("/admin/projects")["data"]} == {own}
    assert {k["tenant_id"] for k in as_a.get("/admin/keys")["data"]} == {own}
    assert as_a.get("/admin/projects/web")["tenant_id"] == own  # B has a `web` too: the name is read in A
    requests = as_a.get("/admin/requests", limit=500)["data"]
    assert {r["tenant_id"] for r in requests} == {own} and "req-iso-a" in {r["request_id"] for r in requests}
    for group in ("tenant", "project", "key", "model", "day"):
        report = as_a.get("/admin/spend", group_by=group)
        whole = world["admin"].get("/admin/spend", group_by=group, tenant=own)
        assert report["data"] == whole["data"] and report["total_cost_nano"] == whole["total_cost_nano"], group
    assert [r["tenant"] for r in as_a.get("/admin/spend", group_by="tenant")["data"]] == [own]
    assert as_a.get("/admin/requests", key_id=a_user["id"])["data"][0]["request_id"] == "req-iso-a"
    assert [r["request_id"] for r in as_a.get("/admin/requests", tenant="iso-a")["data"]] == [
        r["request_id"] for r in requests]


def test_the_master_key_lists_one_tenants_requests(world: dict[str, Any]) -> None:
    """``GET /admin/requests?tenant=`` (id or name), as ``/admin/spend?tenant=``: before, an unknown parameter."""
    admin, b = world["admin"], world["b_user"]
    for ident in ("iso-b", b["tenant_id"]):
        rows = admin.get("/admin/requests", tenant=ident, limit=500)["data"]
        assert {r["tenant_id"] for r in rows} == {b["tenant_id"]} and "req-iso-b" in {r["request_id"] for r in rows}
    assert _status(admin, "GET", "/admin/requests", query={"tenant": "no-such-tenant"}) == 404
    assert _status(admin, "GET", "/admin/requests", query={"tenant": "iso-a", "key_id": b["id"]}) == 404


def test_a_plain_key_gets_403_on_every_admin_route(gw: RunningGateway, world: dict[str, Any]) -> None:
    a_user, b = world["a_user"], world["b_user"]
    as_user = AdminClient(gw.url, a_user["key"])
    before = _b_as_saved(world)
    calls: list[tuple[str, str, Any, dict[str, Any] | None]] = [
        ("GET", "/admin/tenants", None, None), ("POST", "/admin/tenants", {"name": "sneaky"}, None),
        ("GET", "/admin/projects", None, None), ("POST", "/admin/projects", {"name": "x"}, None),
        ("GET", "/admin/keys", None, None), ("POST", "/admin/keys", {"project": a_user["project_id"]}, None),
        ("GET", "/admin/spend", None, None), ("GET", "/admin/spend", None, {"tenant": b["tenant_id"]}),
        ("GET", "/admin/requests", None, None), ("GET", "/admin/requests/req-iso-a", None, None),
        ("GET", "/admin/requests/req-iso-b", None, None), ("GET", "/admin/deployments", None, None),
    ]
    for own in (a_user, b):  # its own records and the other tenant's alike
        calls += [("GET", f"/admin/tenants/{own['tenant_id']}", None, None),
                  ("PATCH", f"/admin/tenants/{own['tenant_id']}", {"rpm": 1}, None),
                  ("DELETE", f"/admin/tenants/{own['tenant_id']}", None, None),
                  ("GET", f"/admin/projects/{own['project_id']}", None, None),
                  ("PATCH", f"/admin/projects/{own['project_id']}", {"rpm": 1}, None),
                  ("DELETE", f"/admin/projects/{own['project_id']}", None, None),
                  ("GET", f"/admin/keys/{own['id']}", None, None),
                  ("PATCH", f"/admin/keys/{own['id']}", {"rpm": 1}, None),
                  ("POST", f"/admin/keys/{own['id']}/rotate", {}, None),
                  ("POST", f"/admin/keys/{own['id']}/revoke", {}, None),
                  ("DELETE", f"/admin/keys/{own['id']}", None, None)]
    for method, path, body, query in calls:
        assert _status(as_user, method, path, body, query) == 403, (method, path, query)
    assert _b_as_saved(world) == before
    for key in (a_user, b):
        _call_billed(gw, world["admin"], key)


def test_every_row_of_a_tenants_calls_carries_its_tenant(gw: RunningGateway, world: dict[str, Any]) -> None:
    """Served, streamed and refused calls (a body that is not valid, a model the key may not use, one that does
    not exist) each leave a request log record and a ledger row of the key's tenant."""
    admin = world["admin"]
    key = setup_key(admin, "iso-rows", models=["mock"])
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
    calls: list[tuple[str, dict[str, Any], type[Exception] | None]] = [
        ("ok", chat_body(), None), ("stream", chat_body(stream=True), None),
        ("not-allowed", chat_body(model="mock-large"), openai.APIStatusError),
        ("no-model", chat_body(model="no-such-model"), openai.APIStatusError),
        ("bad-body", {"model": "mock", "messages": "hello"}, openai.APIStatusError),
    ]
    for name, body, refusal in calls:
        rid = f"req-rows-{name}"
        if refusal is None:
            answer = client.chat.completions.create(**body, extra_headers={"x-request-id": rid})
            if body.get("stream"):
                list(answer)  # type: ignore[arg-type]  # the whole stream: the call has finished
        else:
            with pytest.raises(refusal):
                client.chat.completions.create(**body, extra_headers={"x-request-id": rid})
    wanted = {f"req-rows-{name}" for name, _, _ in calls}
    deadline = time.monotonic() + 5
    while True:
        rows = admin.get("/admin/requests", tenant="iso-rows", limit=500)["data"]
        billed = admin.get("/admin/spend", tenant="iso-rows", group_by="tenant")["data"]
        if {r["request_id"] for r in rows} >= wanted and billed and billed[0]["requests"] >= len(calls):
            break
        assert time.monotonic() < deadline, (rows, billed)
        time.sleep(0.05)
    assert {(r["tenant_id"], r["key_id"]) for r in rows} == {(key["tenant_id"], key["id"])}
    assert (billed[0]["tenant"], billed[0]["requests"], billed[0]["errors"]) == (key["tenant_id"], len(calls), 3)
    for rid in wanted:
        assert _status(AdminClient(gw.url, world["a_admin"]["key"]), "GET", f"/admin/requests/{rid}") == 404
