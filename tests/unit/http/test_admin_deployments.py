"""GET /admin/deployments takes no query parameters: any (``?model=fast``, which read as a filter would look
applied and list every deployment) is a 400 naming it in the OpenAI error shape, after the caller's key is
checked; without one, the master key still gets every deployment's state."""

from __future__ import annotations

import json

import pytest

from aigw.http.admin_deployments import AdminDeployments
from aigw.http.auth import Authenticator
from tests.support.asgi_calls import get_with_key
from tests.unit.routing.fakes import build

MASTER = "mk-deployments"


def endpoint() -> AdminDeployments:
    router, _ = build({"fast": [{}, {}], "slow": [{}]})
    return AdminDeployments(router, Authenticator(MASTER))


@pytest.mark.parametrize(("query", "param", "words"), [
    (b"model=fast", "model", "model: unknown parameter; this endpoint takes no query parameters"),
    (b"state=open", "state", "state: unknown parameter"),
    (b"model=", "model", "model: unknown parameter"),
])
async def test_a_query_parameter_is_a_400_naming_it(query: bytes, param: str, words: str) -> None:
    status, raw = await get_with_key(endpoint().list, "/admin/deployments", MASTER, query)
    error = json.loads(raw)["error"]
    assert (status, error["type"], error["param"], error["code"]) == (400, "invalid_request_error", param,
                                                                      "unknown_parameter")
    assert error["message"].startswith(words), error["message"]


async def test_a_caller_without_the_master_key_is_refused_before_its_query_is_read() -> None:
    status, raw = await get_with_key(endpoint().list, "/admin/deployments", "sk-wrong", b"model=fast")
    assert status == 401 and json.loads(raw)["error"]["param"] is None


async def test_without_parameters_every_deployment_is_listed() -> None:
    status, raw = await get_with_key(endpoint().list, "/admin/deployments", MASTER)
    body = json.loads(raw)
    assert status == 200 and body["object"] == "list"
    assert sorted(d["id"] for d in body["data"]) == ["fast#0", "fast#1", "slow#0"]


async def test_a_bug_in_the_report_is_a_clean_500_logged(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    def broken(router: object) -> object:
        raise KeyError("breaker")

    monkeypatch.setattr("aigw.http.admin_deployments.deployment_report", broken)
    status, raw = await get_with_key(endpoint().list, "/admin/deployments", MASTER)
    error = json.loads(raw)["error"]
    assert status == 500 and error["type"] == "api_error" and "breaker" not in raw.decode()  # no details sent
    assert any("admin GET /admin/deployments failed" in r.getMessage() for r in caplog.records)
