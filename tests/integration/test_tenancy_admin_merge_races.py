"""Two admin PATCHes of one record at once, on SQLite and PostgreSQL: each is applied to the record as saved
when it writes (under the row's lock), so neither undoes the other. A PATCH here is a ``SlowCall``: the gateway
reads the record on its headers and gets its body after the other change is saved."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from aigw.cli.admin_client import AdminClient
from tests.integration.tenancy_support import MASTER, SlowCall, chat_body, gateway_on, setup_key
from tests.support.gateway import RunningGateway

BLOCK = {"pii": {"mode": "block"}}
FLAG_PII = {"pii": {"mode": "flag"}}  # the PII stage runs; a key's metadata sets its mode


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with gateway_on(request.param, tmp_path_factory.mktemp("merge-races"), guardrails=FLAG_PII) as g:
        yield g


@pytest.fixture
def admin(gw: RunningGateway) -> AdminClient:
    return AdminClient(gw.url, MASTER)


def test_a_tenant_admins_metadata_patch_keeps_guardrails_the_master_set_meanwhile(
        gw: RunningGateway, admin: AdminClient) -> None:
    """Before: the tenant admin's PATCH kept the guardrails entry it had read (none), so the master's PII
    block, saved while that PATCH waited, was dropped and the key's prompts went out unchecked."""
    own = setup_key(admin, "meta-race-co", role="tenant_admin")
    key = admin.post("/admin/keys", {"project": own["project_id"], "metadata": {"team": "x"}})
    for path in (f"/admin/keys/{key['id']}", f"/admin/projects/{own['project_id']}"):
        slow = SlowCall(gw, "PATCH", path, {"metadata": {"team": "y"}}, key=own["key"])
        admin.patch(path, {"metadata": {"team": "x", "guardrails": BLOCK}})
        status, body = slow.finish()
        assert status == 200 and body["metadata"] == {"team": "y", "guardrails": BLOCK}
        assert admin.get(path)["metadata"] == {"team": "y", "guardrails": BLOCK}
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
    with pytest.raises(openai.BadRequestError):  # the master's block applies to the key
        client.chat.completions.create(**chat_body("write to alice@example.com"))


def test_a_tenant_admins_guardrails_entry_is_checked_against_the_one_saved_when_it_writes(
        gw: RunningGateway, admin: AdminClient) -> None:
    """Sending back the entry it read is no change, unless the master changed it meanwhile: then it is one,
    a 403, and the master's stays."""
    own = setup_key(admin, "meta-race-back", role="tenant_admin")
    key = admin.post("/admin/keys", {"project": own["project_id"], "metadata": {"guardrails": FLAG_PII}})
    slow = SlowCall(gw, "PATCH", f"/admin/keys/{key['id']}", {"metadata": {"guardrails": FLAG_PII, "team": "z"}},
                    key=own["key"])
    admin.patch(f"/admin/keys/{key['id']}", {"metadata": {"guardrails": BLOCK}})
    status, body = slow.finish()
    assert status == 403 and body["error"]["code"] == "guardrails_master_only"
    assert admin.get(f"/admin/keys/{key['id']}")["metadata"] == {"guardrails": BLOCK}


@pytest.mark.parametrize("kind", ["keys", "projects", "tenants"])
def test_two_patches_of_different_limits_both_stand(gw: RunningGateway, admin: AdminClient, kind: str) -> None:
    """Before: the limits were one record read before the body and written whole, so the PATCH that wrote last
    put back the other's fields as they were when it read them."""
    k = setup_key(admin, f"limits-race-{kind}", rpm=1, tpm=10, max_parallel=1, budget_usd=1.0)
    ident = {"keys": k["id"], "projects": k["project_id"], "tenants": k["tenant_id"]}[kind]
    path = f"/admin/{kind}/{ident}"
    slow = SlowCall(gw, "PATCH", path, {"rpm": 100, "budget_usd": 5.0})
    admin.patch(path, {"tpm": 5000, "max_parallel": 3, "budget_period": "daily"})
    status, body = slow.finish()
    assert status == 200
    want = {"rpm": 100, "tpm": 5000, "max_parallel": 3, "budget_usd": 5.0, "budget_period": "daily"}
    assert {f: body[f] for f in want} == want  # the answer: the record as saved
    saved = admin.get(path)
    assert {f: saved[f] for f in want} == want
