"""Admin changes that race: a change saved while another call on the same record was waiting (for its body,
say) is not undone by that call's save (a PATCH never brings a revoked key back, nor a rotated-out secret)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest

from aigw.cli.admin_client import AdminClient
from tests.integration.tenancy_support import MASTER, SlowCall, chat_body, gateway_config, setup_key
from tests.support.gateway import RunningGateway, running_gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(gateway_config(tmp_path_factory.mktemp("races") / "gw.db")) as g:
        yield g


def _works(gw: RunningGateway, secret: str) -> bool:
    try:
        openai.OpenAI(base_url=gw.v1, api_key=secret, max_retries=0).chat.completions.create(**chat_body())
    except openai.AuthenticationError:
        return False
    return True


def test_a_patch_that_waited_for_its_body_does_not_undo_a_revoke(gw: RunningGateway) -> None:
    admin = AdminClient(gw.url, MASTER)
    k = setup_key(admin, "race-revoke")
    patch = SlowCall(gw, "PATCH", f"/admin/keys/{k['id']}", {"rpm": 100})
    admin.post(f"/admin/keys/{k['id']}/revoke")
    status, body = patch.finish()  # checked against the key as saved when it writes: revoked by then
    assert (status, body["error"]["code"]) == (400, "key_revoked")
    time.sleep(0.5)  # every cache has dropped the key
    assert admin.get(f"/admin/keys/{k['id']}")["revoked"] is True
    assert admin.get(f"/admin/keys/{k['id']}")["rpm"] is None  # nothing of the PATCH was stored
    assert not _works(gw, k["key"])


def test_a_patch_that_waited_for_its_body_does_not_bring_back_a_rotated_out_secret(gw: RunningGateway) -> None:
    admin = AdminClient(gw.url, MASTER)
    k = setup_key(admin, "race-rotate")
    patch = SlowCall(gw, "PATCH", f"/admin/keys/{k['id']}", {"rpm": 100})
    new = admin.post(f"/admin/keys/{k['id']}/rotate")["key"]
    assert patch.finish()[0] == 200
    time.sleep(0.5)
    assert _works(gw, new) and not _works(gw, k["key"])
    assert admin.get(f"/admin/keys/{k['id']}")["rpm"] == 100


def test_a_tenant_patch_that_waited_for_its_body_does_not_enable_a_disabled_tenant(gw: RunningGateway) -> None:
    admin = AdminClient(gw.url, MASTER)
    k = setup_key(admin, "race-tenant")
    patch = SlowCall(gw, "PATCH", f"/admin/tenants/{k['tenant_id']}", {"rpm": 100})
    admin.request("DELETE", f"/admin/tenants/{k['tenant_id']}")
    assert patch.finish()[0] == 200
    time.sleep(0.5)
    assert admin.get(f"/admin/tenants/{k['tenant_id']}")["enabled"] is False
    assert not _works(gw, k["key"])


def test_an_empty_patch_changes_nothing_and_answers_the_record(gw: RunningGateway) -> None:
    admin = AdminClient(gw.url, MASTER)
    k = setup_key(admin, "race-empty", rpm=5)
    for path in (f"/admin/keys/{k['id']}", f"/admin/projects/{k['project_id']}", f"/admin/tenants/{k['tenant_id']}"):
        assert admin.patch(path, {})["id"] in path
    assert admin.get(f"/admin/keys/{k['id']}")["rpm"] == 5
