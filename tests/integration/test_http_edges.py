"""Bad input at the HTTP edge: clear errors in the client's wire format, server keeps serving."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import orjson
import pytest
import requests

from tests.support.gateway import RunningGateway, running_gateway

CHAT = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}


def post(gw: RunningGateway, path: str, data: bytes, **headers: str) -> requests.Response:
    return requests.post(gw.url + path, data=data, headers={"content-type": "application/json", **headers}, timeout=5)


@pytest.fixture(scope="module")
def locked() -> Iterator[RunningGateway]:
    with running_gateway({"server": {"master_key": "sk-master-test", "max_body_bytes": 4096}}) as gw:
        yield gw


def test_malformed_json_is_a_400(gateway: RunningGateway) -> None:
    r = post(gateway, "/v1/chat/completions", b'{"model": "mock", "messages": [')
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and "not valid JSON" in err["message"]
    assert r.headers["x-request-id"]


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"", b"null"])
def test_non_object_bodies_are_rejected(gateway: RunningGateway, body: bytes) -> None:
    r = post(gateway, "/v1/chat/completions", body)
    assert r.status_code == 400 and "error" in r.json()


def test_missing_messages_names_the_field(gateway: RunningGateway) -> None:
    r = post(gateway, "/v1/chat/completions", b'{"model": "mock"}')
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


def test_stream_options_without_stream_is_rejected(gateway: RunningGateway) -> None:
    body = {**CHAT, "stream_options": {"include_usage": True}}
    r = post(gateway, "/v1/chat/completions", orjson.dumps(body))
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream_options"


def test_unknown_path_and_wrong_method(gateway: RunningGateway) -> None:
    assert requests.get(gateway.url + "/v1/nothing", timeout=5).status_code == 404
    r = requests.get(gateway.url + "/v1/chat/completions", timeout=5)
    assert r.status_code == 405 and "error" in r.json()
    assert r.headers["allow"] == "POST"  # RFC 9110 asks a 405 to say what the path takes; it said nothing


def test_health_endpoints(gateway: RunningGateway) -> None:
    assert requests.get(gateway.url + "/health/live", timeout=5).json() == {"status": "ok"}
    ready = requests.get(gateway.url + "/health/ready", timeout=5)
    assert ready.status_code == 200 and ready.json()["status"] in ("ok", "degraded")


def test_body_over_the_limit_is_a_413_and_server_keeps_serving(locked: RunningGateway) -> None:
    big = orjson.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 10_000}]})
    r = post(locked, "/v1/chat/completions", big, authorization="Bearer sk-master-test")
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    ok = post(locked, "/v1/chat/completions", orjson.dumps(CHAT), authorization="Bearer sk-master-test")
    assert ok.status_code == 200


def test_master_key_is_required_and_checked(locked: RunningGateway) -> None:
    missing = post(locked, "/v1/chat/completions", orjson.dumps(CHAT))
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    wrong = post(locked, "/v1/chat/completions", orjson.dumps(CHAT), authorization="Bearer nope")
    assert wrong.status_code == 401
    via_x_api_key = post(locked, "/v1/chat/completions", orjson.dumps(CHAT), **{"x-api-key": "sk-master-test"})
    assert via_x_api_key.status_code == 200


def test_sdk_sees_authentication_error(locked: RunningGateway) -> None:
    client = openai.OpenAI(base_url=locked.v1, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    good = openai.OpenAI(base_url=locked.v1, api_key="sk-master-test", max_retries=0)
    assert any(m.id == "mock" for m in good.models.list())


@pytest.mark.parametrize("value", ["soon", "inf", "1e309", "-1"])
def test_bad_timeout_header_is_a_400(gateway: RunningGateway, value: str) -> None:
    r = post(gateway, "/v1/chat/completions", orjson.dumps(CHAT), **{"x-aigw-timeout": value})
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-aigw-timeout"


def test_an_infinite_body_timeout_is_a_400(gateway: RunningGateway) -> None:
    r = post(gateway, "/v1/chat/completions", orjson.dumps({**CHAT, "timeout": "1e400"}))
    assert r.status_code == 400 and r.json()["error"]["param"] == "timeout"
