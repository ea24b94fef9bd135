"""Admin changes that race: a change saved while another call on the same record was waiting (for its body,
say) is not undone by that call's save (a PATCH never brings a revoked key back, nor a rotated-out secret)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import openai
import pytest

from aigw.cli.admin_client import AdminClient
from tests.integration.tenancy_support import MASTER, chat_body, gateway_config, setup_key
from tests.support.gateway import RunningGateway, running_gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(gateway_config(tmp_path_factory.mktemp("races") / "gw.db")) as g:
        yield g


class _SlowCall:
    """An admin call whose headers are sent now and its body later: the gateway looks the record up on the
    headers, then waits for the body."""

    def __init__(self, gw: RunningGateway, method: str, path: str, body: dict[str, object]) -> None:
        parts = urlsplit(gw.url)
        self.body = json.dumps(body).encode()
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        head = (f"{method} {path} HTTP/1.1\r\nhost: {parts.netloc}\r\nauthorization: Bearer {MASTER}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(self.body)}\r\nconnection: close\r\n\r\n")
        self.sock.sendall(head.encode())
        time.sleep(0.3)  # the handler has read the record and waits for the body

    def finish(self) -> int:
        self.sock.sendall(self.body)
        answer = b""
        while chunk := self.sock.recv(65536):
            answer += chunk
        self.sock.close()
        return int(answer.split(b" ", 2)[1])


def _works(gw: RunningGateway, secret: str) -> bool:
    try:
        openai.OpenAI(base_url=gw.v1, api_key=secret, max_retries=0).chat.completions.create(**chat_body())
    except openai.AuthenticationError:
        return False
    return True


def test_a_patch_that_waited_for_its_body_does_not_undo_a_revoke(gw: RunningGateway) -> None:
    admin = AdminClient(gw.url, MASTER)
    k = setup_key(admin, "race-revoke")
    patch = _SlowCall(gw, "PATCH", f"/admin/keys/{k['id']}", {"rpm": 100})
    admin.post(f"/admin/keys/{k['id']}/revoke")
    assert patch.finish() == 200
    time.sleep(0.5)  # every cache has dropped the key
    assert admin.get(f"/admin/keys/{k['id']}")["revoked"] is True
    assert not _works(gw, k["key"])


def test_a_patch_that_waited_for_its_body_does_not_bring_back_a_rotated_out_secret(gw: RunningGateway) -> None:
    admin = AdminClient(gw.url, MASTER)
    k = setup_key(admin, "race-rotate")
    patch = _SlowCall(gw, "PATCH", f"/admin/keys/{k['id']}", {"rpm": 100})
    new = admin.post(f"/admin/keys/{k['id']}/rotate")["key"]
    assert patch.finish() == 200
    time.sleep(0.5)
    assert _works(gw, new) and not _works(gw, k["key"])
    assert admin.get(f"/admin/keys/{k['id']}")["rpm"] == 100


def test_a_tenant_patch_that_waited_for_its_body_does_not_enable_a_disabled_tenant(gw: RunningGateway) -> None:
    admin = AdminClient(gw.url, MASTER)
    k = setup_key(admin, "race-tenant")
    patch = _SlowCall(gw, "PATCH", f"/admin/tenants/{k['tenant_id']}", {"rpm": 100})
    admin.request("DELETE", f"/admin/tenants/{k['tenant_id']}")
    assert patch.finish() == 200
    time.sleep(0.5)
    assert admin.get(f"/admin/tenants/{k['tenant_id']}")["enabled"] is False
    assert not _works(gw, k["key"])


def test_an_empty_patch_changes_nothing_and_answers_the_record(gw: RunningGateway) -> None:
    admin = AdminClient(gw.url, MASTER)
    k = setup_key(admin, "race-empty", rpm=5)
    for path in (f"/admin/keys/{k['id']}", f"/admin/projects/{k['project_id']}", f"/admin/tenants/{k['tenant_id']}"):
        assert admin.patch(path, {})["id"] in path
    assert admin.get(f"/admin/keys/{k['id']}")["rpm"] == 5
