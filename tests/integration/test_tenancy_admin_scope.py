"""A tenant admin key as the platform team that handed it out expects it to behave: it never grants more than
it holds, never enables what the master key disabled, and pages its tenant list like the master. On SQLite and
on PostgreSQL (the master's disabling is kept by the UPDATE itself)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from aigw.cli.admin_client import AdminClient
from tests.integration.tenancy_support import MASTER, chat_body, gateway_on, setup_key
from tests.integration.test_tenancy_admin_input import refused
from tests.support.gateway import RunningGateway

FLAG_PII = {"pii": {"mode": "flag"}}  # the PII stage runs; tenants' and keys' metadata set its mode


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with gateway_on(request.param, tmp_path_factory.mktemp("admin-scope"), guardrails=FLAG_PII) as g:
        yield g


@pytest.fixture
def admin(gw: RunningGateway) -> AdminClient:
    return AdminClient(gw.url, MASTER)


def _tenant_admin(gw: RunningGateway, admin: AdminClient, tenant: str, **own: Any
                  ) -> tuple[AdminClient, dict[str, Any]]:
    key = setup_key(admin, tenant, role="tenant_admin", **own)
    return AdminClient(gw.url, key["key"]), key


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def test_a_tenant_admin_cannot_create_a_key_broader_than_its_own(gw: RunningGateway, admin: AdminClient) -> None:
    own_expiry = time.time() + 30 * 86400
    as_a, a = _tenant_admin(gw, admin, "bounded-co", models=["mock"], rpm=10, tpm=1000, max_parallel=2,
                            budget_usd=5.0, budget_period="monthly", expires_at=_iso(own_expiry))
    within = {"project": a["project_id"], "models": ["mock"], "rpm": 10, "tpm": 1000, "max_parallel": 2,
              "budget_usd": 5.0, "budget_period": "monthly", "expires_at": _iso(own_expiry - 60)}
    before = len(admin.get("/admin/keys", tenant="bounded-co")["data"])
    for change, field in [
        ({"models": None}, "models"), ({"models": ["mock", "mock-large"]}, "models"),
        ({"expires_at": None}, "expires_at"), ({"expires_at": _iso(own_expiry + 86400)}, "expires_at"),
        ({"rpm": None}, "rpm"), ({"rpm": 11}, "rpm"), ({"tpm": 1001}, "tpm"), ({"max_parallel": None}, "max_parallel"),
        ({"budget_usd": None}, "budget_usd"), ({"budget_usd": 5.01}, "budget_usd"),
        ({"budget_period": "daily"}, "budget_period"), ({"budget_period": "weekly"}, "budget_period"),
    ]:
        body = refused(lambda c=change: as_a.post("/admin/keys", {**within, **c}), 403, field, "cannot grant more")
        assert body["code"] == "exceeds_own_key"
    assert len(admin.get("/admin/keys", tenant="bounded-co")["data"]) == before  # nothing was stored
    made = as_a.post("/admin/keys", {**within, "budget_usd": 2.0, "budget_period": "total", "rpm": 5})
    assert (made["models"], made["rpm"], made["budget_usd"], made["budget_period"]) == (["mock"], 5, 2.0, "total")
    openai.OpenAI(base_url=gw.v1, api_key=made["key"], max_retries=0).chat.completions.create(**chat_body())
    assert admin.post("/admin/keys", {"project": a["project_id"]})["models"] is None  # the master has no bounds


def test_a_tenant_admin_cannot_widen_or_rotate_a_key_beyond_its_own(gw: RunningGateway, admin: AdminClient) -> None:
    as_a, a = _tenant_admin(gw, admin, "widen-co", models=["mock"], rpm=10, budget_usd=5.0)
    narrow = as_a.post("/admin/keys", {"project": a["project_id"], "models": ["mock"], "rpm": 5, "budget_usd": 1.0})
    for change, field in [({"rpm": 20}, "rpm"), ({"rpm": None}, "rpm"), ({"models": None}, "models"),
                          ({"budget_usd": 50.0}, "budget_usd"), ({"budget_period": "weekly"}, "budget_period")]:
        refused(lambda c=change: as_a.patch(f"/admin/keys/{narrow['id']}", c), 403, field, "cannot grant more")
    refused(lambda: as_a.patch(f"/admin/keys/{a['id']}", {"budget_usd": None}), 403, "budget_usd")  # nor its own
    assert as_a.get(f"/admin/keys/{narrow['id']}")["rpm"] == 5 and as_a.get(f"/admin/keys/{a['id']}")["budget_usd"] == 5
    assert as_a.patch(f"/admin/keys/{narrow['id']}", {"rpm": 10, "name": "ok"})["rpm"] == 10
    broad = admin.post("/admin/keys", {"project": a["project_id"]})  # the master's: every model, no limits
    refused(lambda: as_a.post(f"/admin/keys/{broad['id']}/rotate", {}), 403, "models")  # its new secret: refused
    assert as_a.get(f"/admin/keys/{broad['id']}")["prefix"] == broad["prefix"]  # not rotated
    assert as_a.patch(f"/admin/keys/{broad['id']}", {"name": "renamed"})["name"] == "renamed"  # narrowing is fine
    assert as_a.post(f"/admin/keys/{narrow['id']}/rotate", {})["key"].startswith("sk-aigw-")


def test_what_the_master_key_disabled_a_tenant_admin_cannot_enable(gw: RunningGateway, admin: AdminClient) -> None:
    as_a, a = _tenant_admin(gw, admin, "disabled-co")
    user = setup_key(admin, "disabled-co", project="other")
    client = openai.OpenAI(base_url=gw.v1, api_key=user["key"], max_retries=0)
    project = f"/admin/projects/{user['project_id']}"
    admin.request("DELETE", project)
    body = refused(lambda: as_a.patch(project, {"enabled": True}), 403, "enabled", "only the master key")
    assert body["code"] == "disabled_by_master"
    as_a.request("DELETE", project)  # disabling it again does not make it the tenant admin's
    refused(lambda: as_a.patch(project, {"enabled": True, "name": "back"}), 403, "enabled")
    assert as_a.get(project)["name"] == "other" and as_a.get(project)["disabled_by"] == "master"
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**chat_body())
    assert admin.patch(project, {"enabled": True})["disabled_by"] is None
    assert as_a.request("DELETE", project)["disabled_by"] == a["id"]  # what a tenant admin disabled, it may enable
    assert as_a.patch(project, {"enabled": True})["enabled"] is True
    key = f"/admin/keys/{user['id']}"
    admin.patch(key, {"enabled": False})
    refused(lambda: as_a.patch(key, {"enabled": True}), 403, "enabled", "only the master key")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**chat_body())
    assert admin.patch(key, {"enabled": True})["enabled"] is True
    client.chat.completions.create(**chat_body())


def test_a_tenant_admin_pages_its_tenant_list_like_the_master(gw: RunningGateway, admin: AdminClient) -> None:
    as_a, a = _tenant_admin(gw, admin, "paging-co")
    other = setup_key(admin, "paging-other")
    refused(lambda: as_a.get("/admin/tenants", limit=0), 400, "limit")
    page = as_a.get("/admin/tenants", limit=1)
    assert [t["id"] for t in page["data"]] == [a["tenant_id"]] and page["has_more"] is False
    after = as_a.get("/admin/tenants", limit=1, after=a["tenant_id"])  # the next page: nothing follows its own
    assert (after["data"], after["has_more"], after["last_id"]) == ([], False, None)
    refused(lambda: as_a.get("/admin/tenants", after=other["tenant_id"]), 404, None, "No tenant")


def test_a_tenant_admin_cannot_set_or_drop_the_guardrails_the_master_set(gw: RunningGateway,
                                                                         admin: AdminClient) -> None:
    """Key and project guardrails win over the tenant's: a tenant admin that could write them could switch off
    the PII block the master key set. Its other metadata it changes; the master's guardrails entry stays."""
    block = {"pii": {"mode": "block"}}
    as_a, a = _tenant_admin(gw, admin, "guarded-co")
    admin.patch(f"/admin/tenants/{a['tenant_id']}", {"metadata": {"guardrails": block}})
    off = {"guardrails": {"pii": {"mode": "off"}}}
    body = refused(lambda: as_a.post("/admin/keys", {"project": a["project_id"], "metadata": off}), 403,
                   "metadata.guardrails", "only the master key")
    assert body["code"] == "guardrails_master_only"
    refused(lambda: as_a.patch(f"/admin/projects/{a['project_id']}", {"metadata": off}), 403, "metadata.guardrails")
    assert "guardrails" not in admin.get(f"/admin/projects/{a['project_id']}")["metadata"]  # nothing stored
    key = admin.post("/admin/keys", {"project": a["project_id"], "metadata": {"guardrails": block, "team": "x"}})
    refused(lambda: as_a.patch(f"/admin/keys/{key['id']}", {"metadata": off}), 403, "metadata.guardrails")
    kept = as_a.patch(f"/admin/keys/{key['id']}", {"metadata": {"team": "y"}})  # leaves guardrails out: kept
    assert kept["metadata"] == {"team": "y", "guardrails": block}
    same = as_a.patch(f"/admin/keys/{key['id']}", {"metadata": {"team": "z", "guardrails": block}})
    assert same["metadata"]["team"] == "z"  # sending the master's entry back unchanged is no change
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
    with pytest.raises(openai.BadRequestError):  # the master's block still applies to the key
        client.chat.completions.create(**chat_body("write to alice@example.com"))
    mine = as_a.post("/admin/keys", {"project": a["project_id"], "metadata": {"team": "q"}})
    with pytest.raises(openai.BadRequestError):  # and the tenant's to a key its admin made
        openai.OpenAI(base_url=gw.v1, api_key=mine["key"], max_retries=0).chat.completions.create(
            **chat_body("write to alice@example.com"))
