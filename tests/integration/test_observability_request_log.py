"""GET /admin/requests: every request is listed with its metadata, filtered, paged, and found by id."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.gateway import RunningGateway, running_gateway

MASTER = "sk-master-request-log-4242"
AUTH = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = tmp_path_factory.mktemp("rl") / "gw.db"
    with running_gateway({
        "server": {"master_key": MASTER},
        "database_url": f"sqlite:///{db}",
        "models": [{"name": "fast", "provider": "mock"},
                   {"name": "slow", "provider": "mock", "latency_ms": 60},
                   {"name": "down", "provider": "mock", "fail_rate": 1.0, "mock": {"fail_kind": "unavailable"}}],
        "routing": {"*": {"num_retries": 0}},
    }) as gw:
        started = time.time()
        for i in range(5):
            chat(gw, "fast", f"rl-fast-{i}")
        chat(gw, "slow", "rl-slow-0")
        chat(gw, "down", "rl-down-0")
        chat(gw, "fast", "rl-stream-0", stream=True)
        gw.started = started  # type: ignore[attr-defined]
        yield gw


def chat(gw: RunningGateway, model: str, request_id: str, **body: Any) -> None:
    requests.post(gw.v1 + "/chat/completions", timeout=10, headers={**AUTH, "x-request-id": request_id},
                  json={"model": model, "messages": [{"role": "user", "content": "hi"}], **body})


def listed(gw: RunningGateway, **params: Any) -> dict[str, Any]:
    r = requests.get(gw.url + "/admin/requests", params=params, headers=AUTH, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def ids(page: dict[str, Any]) -> set[str]:
    return {item["request_id"] for item in page["data"]}


def wait_for(gw: RunningGateway, request_id: str) -> None:
    """A stream's log record lands right after its last byte; wait for it (at most 3 s)."""
    deadline = time.monotonic() + 3
    while request_id not in ids(listed(gw, limit=500)) and time.monotonic() < deadline:
        time.sleep(0.02)


def test_every_request_is_listed_newest_first_with_its_metadata(gw: RunningGateway) -> None:
    wait_for(gw, "rl-stream-0")
    page = listed(gw)
    assert ids(page) == {f"rl-fast-{i}" for i in range(5)} | {"rl-slow-0", "rl-down-0", "rl-stream-0"}
    ts = [item["ts"] for item in page["data"]]
    assert ts == sorted(ts, reverse=True) and page["has_more"] is False and page["next_cursor"] is None
    one = next(item for item in page["data"] if item["request_id"] == "rl-fast-0")
    assert one["model"] == "fast" and one["provider"] == "mock" and one["status"] == 200
    assert one["input_tokens"] > 0 and one["output_tokens"] > 0 and one["key_prefix"] == "master"
    assert one["request_body"] is None and one["response_body"] is None
    streamed = next(item for item in page["data"] if item["request_id"] == "rl-stream-0")
    assert streamed["stream"] is True and streamed["ttft_ms"] is not None


def test_filters(gw: RunningGateway) -> None:
    wait_for(gw, "rl-stream-0")
    assert ids(listed(gw, model="slow")) == {"rl-slow-0"}
    assert ids(listed(gw, status="503")) == {"rl-down-0"}
    assert ids(listed(gw, status="5xx")) == {"rl-down-0"}
    assert ids(listed(gw, min_latency_ms=50)) == {"rl-slow-0"}
    assert ids(listed(gw, key_id="master", model="down")) == {"rl-down-0"}
    missing = requests.get(gw.url + "/admin/requests", params={"key_id": "someone-else"}, headers=AUTH, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "key_not_found"  # as /admin/spend
    assert len(ids(listed(gw, since=gw.started))) == 8  # type: ignore[attr-defined]
    assert ids(listed(gw, until="2001-01-01T00:00:00Z")) == set()


def test_paging_walks_every_request_once(gw: RunningGateway) -> None:
    wait_for(gw, "rl-stream-0")
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = listed(gw, **params)
        seen += [item["request_id"] for item in page["data"]]
        if not page["has_more"]:
            break
        params["cursor"] = page["next_cursor"]
    assert len(seen) == 8 and len(set(seen)) == 8


def test_by_id(gw: RunningGateway) -> None:
    r = requests.get(gw.url + "/admin/requests/rl-down-0", headers=AUTH, timeout=5)
    assert r.status_code == 200
    assert r.json()["error_kind"] == "unavailable" and r.json()["status"] == 503
    missing = requests.get(gw.url + "/admin/requests/nope", headers=AUTH, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"limit": 2.5}, {"status": "abc"},
                                    {"since": "yesterday"}, {"cursor": "garbage"}, {"colour": "red"},
                                    {"min_latency_ms": "x"}, {"status": "\u00b2"},
                                    {"status": "99999999999999999999999"}, {"min_latency_ms": "nan"}])
def test_bad_filters_are_a_clear_400(gw: RunningGateway, params: dict[str, Any]) -> None:
    r = requests.get(gw.url + "/admin/requests", params=params, headers=AUTH, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["message"]


def test_needs_the_master_key(gw: RunningGateway) -> None:
    assert requests.get(gw.url + "/admin/requests", timeout=5).status_code == 401
    bad = {"Authorization": "Bearer sk-not-master-0000"}
    assert requests.get(gw.url + "/admin/requests", headers=bad, timeout=5).status_code == 401
    assert requests.get(gw.url + "/admin/requests/rl-down-0", headers=bad, timeout=5).status_code == 401


def test_health_reports_the_database(gw: RunningGateway) -> None:
    r = requests.get(gw.url + "/health/ready", timeout=5)
    assert r.status_code == 200
    assert r.json()["checks"]["database"]["status"] == "ok"


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_gone_is_a_499_of_kind_client_disconnected(tmp_path: Any, stream: bool) -> None:
    """A client that leaves before its answer: the record, the log line and the span said `upstream_error`
    (the kind of the bare error the HTTP layer set), so a search for upstream failures found clients that
    hung up, and the ledger (`client_disconnected`) and the request log disagreed on the same request."""
    with running_gateway({"server": {"master_key": MASTER}, "database_url": f"sqlite:///{tmp_path}/gw.db",
                          "models": [{"name": "very-slow", "provider": "mock", "latency_ms": 3000}]}) as gw:
        raw = json.dumps({"model": "very-slow", "messages": [{"role": "user", "content": "hi"}],
                          "stream": stream}).encode()
        port = int(gw.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         b"x-request-id: rl-gone-0\r\nauthorization: Bearer " + MASTER.encode()
                         + b"\r\ncontent-length: " + str(len(raw)).encode() + b"\r\n\r\n" + raw)
            time.sleep(0.2)
        wait_for(gw, "rl-gone-0")
        r = requests.get(gw.url + "/admin/requests/rl-gone-0", headers=AUTH, timeout=5)
        assert r.status_code == 200
        assert (r.json()["status"], r.json()["error_kind"]) == (499, "client_disconnected")
