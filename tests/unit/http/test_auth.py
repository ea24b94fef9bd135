"""Who gets in, as a client sees it: an open gateway (no master key) with tenancy on still refuses a virtual key
it knows and cannot use, in the wire format the client spoke, and lets in the rest as before."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from aigw.stores.keygen import new_secret
from tests.support.gateway import RunningGateway, running_gateway

CHAT = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
MESSAGES = {"model": "mock", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def gateway() -> Iterator[RunningGateway]:
    with running_gateway({}) as gw:  # no master key: open; tenancy is on by default
        yield gw


def _admin(gw: RunningGateway, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = requests.request(method, gw.url + path, json=body, timeout=5)  # open: the admin API needs no key
    assert r.status_code in (200, 201), r.text
    out: dict[str, Any] = r.json()
    return out


def _new_key(gw: RunningGateway) -> dict[str, Any]:
    tenant = _admin(gw, "POST", "/admin/tenants", {"name": f"t-{time.monotonic_ns()}"})
    project = _admin(gw, "POST", "/admin/projects", {"name": "web", "tenant": tenant["id"]})
    return _admin(gw, "POST", "/admin/keys", {"project": project["id"]})


def _chat(gw: RunningGateway, key: str | None) -> requests.Response:
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    return requests.post(gw.v1 + "/chat/completions", json=CHAT, headers=headers, timeout=10)


def _messages(gw: RunningGateway, key: str | None) -> requests.Response:
    headers = {"anthropic-version": "2023-06-01", **({"x-api-key": key} if key is not None else {})}
    return requests.post(gw.v1 + "/messages", json=MESSAGES, headers=headers, timeout=10)


def _revoke(gw: RunningGateway, key: dict[str, Any]) -> str:
    _admin(gw, "POST", f"/admin/keys/{key['id']}/revoke")
    return "This API key was revoked at "


def _expire(gw: RunningGateway, key: dict[str, Any]) -> str:
    _admin(gw, "PATCH", f"/admin/keys/{key['id']}", {"expires_at": "2020-01-01T00:00:00Z"})
    return "This API key expired at 2020-01-01T00:00:00Z"


def _disable(gw: RunningGateway, key: dict[str, Any]) -> str:
    _admin(gw, "PATCH", f"/admin/keys/{key['id']}", {"enabled": False})
    return "This API key is disabled"


def _disable_tenant(gw: RunningGateway, key: dict[str, Any]) -> str:
    _admin(gw, "PATCH", f"/admin/tenants/{key['tenant_id']}", {"enabled": False})
    return "This API key's tenant is disabled"


def _rotate_past_grace(gw: RunningGateway, key: dict[str, Any]) -> str:
    _admin(gw, "POST", f"/admin/keys/{key['id']}/rotate", {"grace_s": 0.2})
    time.sleep(0.3)
    return "This API key was rotated; its previous secret stopped working at "


CHANGES = [_revoke, _expire, _disable, _disable_tenant, _rotate_past_grace]


@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("used_before", [True, False], ids=["used-before", "never-used"])
def test_an_unusable_key_is_refused_on_an_open_gateway_in_openai_format(
        gateway: RunningGateway, change: Callable[[RunningGateway, dict[str, Any]], str], used_before: bool) -> None:
    key = _new_key(gateway)
    if used_before:  # held by the key cache as usable, then changed
        assert _chat(gateway, key["key"]).status_code == 200
    says = change(gateway, key)
    r = _chat(gateway, key["key"])
    assert r.status_code == 401, r.text  # it was a 200: let in as an anonymous caller
    error = r.json()["error"]
    assert error["code"] == "invalid_api_key" and error["message"].startswith(says), error


@pytest.mark.parametrize("change", [_revoke, _expire], ids=lambda f: f.__name__.strip("_"))
def test_an_unusable_key_is_refused_on_an_open_gateway_in_anthropic_format(
        gateway: RunningGateway, change: Callable[[RunningGateway, dict[str, Any]], str]) -> None:
    key = _new_key(gateway)
    says = change(gateway, key)
    r = _messages(gateway, key["key"])
    assert r.status_code == 401, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error", body
    assert body["error"]["message"].startswith(says), body


@pytest.mark.parametrize("key", [None, "anything-without-a-master-key", new_secret()],
                         ids=["no-key", "foreign-secret", "unknown-gateway-secret"])
def test_an_open_gateway_still_lets_in_callers_with_no_key_or_an_unknown_one(
        gateway: RunningGateway, key: str | None) -> None:
    assert _chat(gateway, key).status_code == 200
    assert _messages(gateway, key).status_code == 200


def test_a_usable_key_on_an_open_gateway_is_still_its_own_caller(gateway: RunningGateway) -> None:
    key = _new_key(gateway)
    assert _chat(gateway, key["key"]).status_code == 200
    rotated = _admin(gateway, "POST", f"/admin/keys/{key['id']}/rotate", {"grace_s": 60})
    assert _chat(gateway, key["key"]).status_code == 200  # the old secret, in its grace
    assert _chat(gateway, rotated["key"]).status_code == 200
