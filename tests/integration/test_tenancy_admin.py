"""Tenants, projects and keys as an operator and a client see them: admin API, CLI, SDK."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from click.testing import CliRunner

from aigw.cli.admin_client import AdminClient, AdminError
from aigw.cli.main import cli
from tests.integration.tenancy_support import MASTER, chat_body, gateway_config, setup_key
from tests.support.gateway import RunningGateway, running_gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(gateway_config(tmp_path_factory.mktemp("tenancy") / "gw.db")) as g:
        yield g


@pytest.fixture
def admin(gw: RunningGateway) -> AdminClient:
    return AdminClient(gw.url, MASTER)


def _client(gw: RunningGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)


def _cli(gw: RunningGateway, *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={"AIGW_URL": gw.url, "AIGW_MASTER_KEY": MASTER})
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_creates_tenant_project_and_key_and_the_key_works(gw: RunningGateway) -> None:
    tenant = json.loads(_cli(gw, "tenants", "create", "cli-co", "--json"))
    project = json.loads(_cli(gw, "projects", "create", "app", "--tenant", "cli-co", "--json"))
    assert project["tenant_id"] == tenant["id"]
    key = json.loads(_cli(gw, "keys", "create", "--project", project["id"], "--models", "mock", "--rpm", "100",
                          "--max-parallel", "4", "--budget", "5", "--period", "weekly",
                          "--expires", "2099-01-01T00:00:00Z", "--json"))
    assert key["key"].startswith("sk-aigw-") and key["prefix"] == key["key"][:12]
    assert (key["models"], key["rpm"], key["budget_usd"], key["budget_period"]) == (["mock"], 100, 5.0, "weekly")
    assert key["expires_at"] == "2099-01-01T00:00:00Z"
    table = _cli(gw, "keys", "list", "--project", project["id"])
    assert key["prefix"] in table and key["key"] not in table  # the secret is never shown again
    answer = _client(gw, key["key"]).chat.completions.create(**chat_body())
    assert answer.choices[0].message.content


def test_cli_reports_errors_readably(gw: RunningGateway) -> None:
    result = CliRunner().invoke(cli, ["projects", "create", "x", "--tenant", "nope"],
                                env={"AIGW_URL": gw.url, "AIGW_MASTER_KEY": MASTER})
    assert result.exit_code == 1 and "No tenant `nope`" in result.output
    result = CliRunner().invoke(cli, ["tenants", "list"], env={"AIGW_URL": gw.url, "AIGW_MASTER_KEY": "wrong"})
    assert result.exit_code == 1 and "HTTP 401" in result.output


def test_allowed_models_are_enforced_and_listed(gw: RunningGateway, admin: AdminClient) -> None:
    key = setup_key(admin, "models-co", models=["mock"])["key"]
    client = _client(gw, key)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(**{**chat_body(), "model": "mock-large"})
    assert [m.id for m in client.models.list()] == ["mock"]


def test_revoked_rotated_expired_and_disabled_keys_stop_working(gw: RunningGateway, admin: AdminClient) -> None:
    k = setup_key(admin, "life-co", project="p1")
    client = _client(gw, k["key"])
    client.chat.completions.create(**chat_body())
    rotated = admin.post(f"/admin/keys/{k['id']}/rotate")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**chat_body())
    _client(gw, rotated["key"]).chat.completions.create(**chat_body())
    admin.post(f"/admin/keys/{k['id']}/revoke")
    with pytest.raises(openai.AuthenticationError):
        _client(gw, rotated["key"]).chat.completions.create(**chat_body())
    expired = setup_key(admin, "life-co", project="p1", expires_at=time.time() + 1)
    _client(gw, expired["key"]).chat.completions.create(**chat_body())
    time.sleep(1.2)
    with pytest.raises(openai.AuthenticationError):
        _client(gw, expired["key"]).chat.completions.create(**chat_body())
    live = setup_key(admin, "life-co", project="p1")
    admin.patch(f"/admin/projects/{live['project_id']}", {"enabled": False})
    with pytest.raises(openai.AuthenticationError):
        _client(gw, live["key"]).chat.completions.create(**chat_body())


def test_a_rotation_with_grace_keeps_the_old_secret_working_until_the_grace_ends(
        gw: RunningGateway, admin: AdminClient) -> None:
    k = setup_key(admin, "grace-co", project="p1")
    old = _client(gw, k["key"])
    old.chat.completions.create(**chat_body())  # known to this replica before the rotation
    rotated = admin.post(f"/admin/keys/{k['id']}/rotate", {"grace_s": 3})
    assert rotated["id"] == k["id"] and rotated["key"] != k["key"] and rotated["previous_key_until"]
    old.chat.completions.create(**chat_body())  # both secrets work during the grace
    new = _client(gw, rotated["key"])
    new.chat.completions.create(**chat_body())
    time.sleep(3.3)
    with pytest.raises(openai.AuthenticationError):
        old.chat.completions.create(**chat_body())
    new.chat.completions.create(**chat_body())
    with pytest.raises(AdminError) as bad:  # refused, and nothing changed
        admin.post(f"/admin/keys/{k['id']}/rotate", {"grace_s": -1})
    assert bad.value.status == 400
    new.chat.completions.create(**chat_body())
    again = json.loads(_cli(gw, "keys", "rotate", k["id"], "--grace", "60", "--json"))
    new.chat.completions.create(**chat_body())  # now the previous secret, in a grace of its own
    _client(gw, again["key"]).chat.completions.create(**chat_body())
    admin.post(f"/admin/keys/{k['id']}/revoke")  # a revocation ends every secret of the key at once
    for client in (new, _client(gw, again["key"])):
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(**chat_body())


def test_a_revocation_reaches_another_replica_within_a_second(tmp_path: Path) -> None:
    cfg = gateway_config(tmp_path / "shared.db")
    with running_gateway(cfg) as a, running_gateway(cfg) as b:
        key = setup_key(AdminClient(a.url, MASTER), "repl-co")
        on_b = _client(b, key["key"])
        on_b.chat.completions.create(**chat_body())  # now cached on replica b
        AdminClient(a.url, MASTER).post(f"/admin/keys/{key['id']}/revoke")
        started = time.monotonic()
        while True:
            try:
                on_b.chat.completions.create(**chat_body())
            except openai.AuthenticationError:
                break
            assert time.monotonic() - started < 1.0, "replica b still accepts a revoked key"
            time.sleep(0.02)


def test_a_tenant_admin_key_sees_only_its_tenant_and_gets_404_for_others(gw: RunningGateway,
                                                                        admin: AdminClient) -> None:
    a = setup_key(admin, "tenant-a", role="tenant_admin")
    b = setup_key(admin, "tenant-b")
    b_tenant, b_project, b_key = b["tenant_id"], b["project_id"], b["id"]
    as_a = AdminClient(gw.url, a["key"])
    for method, path, body in [
        ("GET", f"/admin/tenants/{b_tenant}", None), ("PATCH", f"/admin/tenants/{b_tenant}", {"rpm": 1}),
        ("GET", f"/admin/projects/{b_project}", None), ("PATCH", f"/admin/projects/{b_project}", {"rpm": 1}),
        ("GET", f"/admin/keys/{b_key}", None), ("PATCH", f"/admin/keys/{b_key}", {"rpm": 1}),
        ("POST", f"/admin/keys/{b_key}/revoke", {}), ("POST", f"/admin/keys/{b_key}/rotate", {}),
        ("DELETE", f"/admin/keys/{b_key}", None),
        ("GET", "/admin/projects?tenant=" + b_tenant, None), ("GET", "/admin/keys?project=" + b_project, None),
        ("GET", "/admin/spend?key=" + b_key, None), ("GET", "/admin/spend?tenant=" + b_tenant, None),
        ("GET", "/admin/requests?key_id=" + b_key, None),
        ("POST", "/admin/keys", {"project": b_project}), ("POST", "/admin/projects", {"name": "x", "tenant": b_tenant}),
    ]:
        path, _, query = path.partition("?")
        params = dict([query.split("=")]) if query else None
        with pytest.raises(AdminError) as err:
            as_a.request(method, path, body, params)
        assert err.value.status == 404, (method, path)
    assert [t["id"] for t in as_a.get("/admin/tenants")["data"]] == [a["tenant_id"]]
    assert {k["tenant_id"] for k in as_a.get("/admin/keys")["data"]} == {a["tenant_id"]}
    with pytest.raises(AdminError) as err:
        as_a.post("/admin/tenants", {"name": "sneaky"})
    assert err.value.status == 403
    own = as_a.post("/admin/keys", {"project": a["project_id"]})  # its own tenant: fine
    assert own["tenant_id"] == a["tenant_id"]
    with pytest.raises(AdminError) as err:
        AdminClient(gw.url, b["key"]).get("/admin/tenants")  # a plain key is no admin
    assert err.value.status == 403


def test_bad_admin_input_is_refused_with_the_field_named(admin: AdminClient) -> None:
    for body, field in [({"name": "x", "rpm": 0}, "rpm"), ({"name": "x", "budget_period": "hourly"}, "budget_period"),
                        ({"name": "x", "colour": "red"}, "colour")]:
        with pytest.raises(AdminError) as err:
            admin.post("/admin/tenants", body)
        assert err.value.status == 400 and field in err.value.message
    setup_key(admin, "dup-co")
    with pytest.raises(AdminError) as err:
        admin.post("/admin/tenants", {"name": "dup-co"})
    assert err.value.status == 409


def test_with_redis_down_the_gateway_serves_under_its_policies(tmp_path: Path) -> None:
    cfg = gateway_config(tmp_path / "noredis.db", redis_url="redis://127.0.0.1:1/0")  # nothing listens there
    with running_gateway(cfg) as gw:
        admin = AdminClient(gw.url, MASTER)
        free = setup_key(admin, "down-co", rpm=5)  # rate limits fail open: calls go through
        assert _client(gw, free["key"]).chat.completions.create(**chat_body()).choices
        capped = setup_key(admin, "down-co", project="p2", budget_usd=5.0)
        with pytest.raises(openai.APIStatusError) as err:  # budgets fail closed: no unbounded spend
            _client(gw, capped["key"]).chat.completions.create(**chat_body())
        assert err.value.status_code == 503
        with pytest.raises(AdminError) as admin_err:  # saved, but other replicas cannot be told
            admin.post(f"/admin/keys/{free['id']}/revoke")
        assert admin_err.value.status == 503 and "repeat the call" in admin_err.value.message
        with pytest.raises(openai.AuthenticationError):  # this replica knows at once
            _client(gw, free["key"]).chat.completions.create(**chat_body())


def test_keys_are_listed_in_pages(gw: RunningGateway, admin: AdminClient) -> None:
    first_key = setup_key(admin, "paged")
    made = [first_key["id"]] + [admin.post("/admin/keys", {"project": first_key["project_id"]})["id"]
                                for _ in range(4)]
    seen: list[str] = []
    after = ""
    for _ in range(5):
        page = admin.get("/admin/keys", tenant="paged", limit=2, after=after)
        seen += [k["id"] for k in page["data"]]
        assert page["last_id"] == seen[-1]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == made  # oldest first, each once
    whole = admin.get("/admin/keys", tenant="paged")
    assert [k["id"] for k in whole["data"]] == made and whole["has_more"] is False
    other = setup_key(admin, "paged-other")
    with pytest.raises(AdminError) as err:  # a cursor from another tenant is no cursor for a tenant admin
        AdminClient(gw.url, setup_key(admin, "paged", role="tenant_admin")["key"]).get(
            "/admin/keys", limit=2, after=other["id"])
    assert err.value.status == 404
    with pytest.raises(AdminError) as err:
        admin.get("/admin/keys", limit=0)
    assert err.value.status == 400 and "limit" in err.value.message
    assert f"more: --after {made[1]}" in _cli(gw, "keys", "list", "--tenant", "paged", "--limit", "2")


def test_tenants_and_projects_are_listed_in_pages(gw: RunningGateway, admin: AdminClient) -> None:
    made = [setup_key(admin, f"paged-tenant-{i}")["tenant_id"] for i in range(3)]
    everything = [t["id"] for t in admin.get("/admin/tenants")["data"]]
    at = everything.index(made[0])
    page = admin.get("/admin/tenants", limit=2, after=everything[at - 1] if at else "")
    assert [t["id"] for t in page["data"]] == everything[at:at + 2] and page["has_more"] is True
    last = admin.get("/admin/tenants", limit=1000, after=page["last_id"])
    assert [t["id"] for t in last["data"]] == everything[at + 2:] and last["has_more"] is False
    tenant_admin = AdminClient(gw.url, setup_key(admin, "paged-tenant-0", role="tenant_admin")["key"])
    assert [t["id"] for t in tenant_admin.get("/admin/tenants", limit=1)["data"]] == [made[0]]
    for name in ("api", "batch"):
        admin.post("/admin/projects", {"name": name, "tenant": made[1]})
    projects = admin.get("/admin/projects", tenant=made[1], limit=2)
    assert [p["name"] for p in projects["data"]] == ["web", "api"] and projects["has_more"] is True
    assert [p["name"] for p in admin.get("/admin/projects", tenant=made[1], after=projects["last_id"])["data"]] \
        == ["batch"]
    assert "more: --after" in _cli(gw, "tenants", "list", "--limit", "1")
    assert "more: --after" in _cli(gw, "projects", "list", "--tenant", made[1], "--limit", "1")


def test_every_list_option_of_the_cli_is_a_parameter_the_gateway_reads(gw: RunningGateway,
                                                                        admin: AdminClient) -> None:
    """The lists read their query strictly (an unknown parameter is a 400): the CLI's options, all at once."""
    first = setup_key(admin, "cli-opts")
    second = admin.post("/admin/keys", {"project": first["project_id"]})
    keys = json.loads(_cli(gw, "keys", "list", "--tenant", "cli-opts", "--project", first["project_id"],
                           "--limit", "5", "--after", first["id"], "--json"))
    assert [k["id"] for k in keys["data"]] == [second["id"]]
    projects = json.loads(_cli(gw, "projects", "list", "--tenant", "cli-opts", "--limit", "5", "--after",
                               first["project_id"], "--json"))
    assert projects["data"] == []
    tenants = json.loads(_cli(gw, "tenants", "list", "--limit", "1", "--after", first["tenant_id"], "--json"))
    assert first["tenant_id"] not in [t["id"] for t in tenants["data"]]  # the page after it
    with pytest.raises(AdminError) as err:
        admin.get("/admin/keys", tenant="cli-opts", projet="web")
    assert err.value.status == 400 and err.value.body["error"]["param"] == "projet"


def test_every_admin_change_is_logged_with_who_made_it_and_what_it_touched(
        admin: AdminClient, caplog: pytest.LogCaptureFixture) -> None:
    """An audit trail: creates, changes, revokes and deletes each leave one line naming the object, its
    tenant and who did it; reads leave none, and no line carries a key's secret."""
    with caplog.at_level("INFO", logger="aigw.admin"):
        key = setup_key(admin, "audited-co")
        admin.post(f"/admin/keys/{key['id']}/revoke", {})
        admin.get("/admin/keys", tenant=key["tenant_id"])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("admin change:")]
    assert len(lines) == 4, lines  # tenant, project and key created, key revoked; the list is not a change
    assert all("by the master key" in line and key["tenant_id"] in line for line in lines)
    assert f"POST /admin/keys/{key['id']}/revoke -> 200, object {key['id']}" in lines[-1]
    assert not any(key["key"] in r.getMessage() for r in caplog.records)


def test_a_revoke_during_a_grace_ends_both_secrets_and_shows_no_grace(gw: RunningGateway, admin: AdminClient) -> None:
    k = setup_key(admin, "grace-revoke-co", project="p1")
    rotated = admin.post(f"/admin/keys/{k['id']}/rotate", {"grace_s": 600})
    revoked = admin.post(f"/admin/keys/{k['id']}/revoke")
    assert revoked["previous_key_until"] is None and admin.get(f"/admin/keys/{k['id']}")["previous_key_until"] is None
    for secret in (k["key"], rotated["key"]):
        with pytest.raises(openai.AuthenticationError):
            _client(gw, secret).chat.completions.create(**chat_body())
