"""The gateway's route table as a client sees it over a real socket: HEAD wherever GET, 405 with ``Allow``; and
the method a HEAD is logged under (in process)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from aigw.http.admin_guard import guarded
from aigw.http.request import HttpRequest
from aigw.http.server import GatewayApp
from aigw.pipeline.context import Principal
from aigw.types import JSON
from tests.support.gateway import RunningGateway, running_gateway


@pytest.fixture(scope="module")
def gateway() -> Iterator[RunningGateway]:
    with running_gateway({}) as gw:  # open (no master key), tenancy on: the admin API answers anyone
        yield gw


def _read_answer(sock: socket.socket, buffered: bytes, with_body: bool) -> tuple[int, dict[str, str], bytes, bytes]:
    """One answer read off ``sock``: status, headers, body (by content-length, when ``with_body``), and the
    bytes that came after it (the start of the next answer, if any)."""
    data = buffered
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"connection closed mid-head: {data!r}"
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines[1:])}
    size = int(headers.get("content-length", "0")) if with_body else 0
    while len(rest) < size:
        more = sock.recv(65536)
        assert more, "connection closed mid-body"
        rest += more
    return int(lines[0].split(" ")[1]), headers, rest[:size], rest[size:]


def _exchange(gw: RunningGateway, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    port = int(gw.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nhost: t\r\n\r\n".encode())
        status, headers, body, _ = _read_answer(sock, b"", with_body=method != "HEAD")
        return status, headers, body


def test_head_on_health_live_is_the_get_answer_without_its_body_and_the_connection_stays_usable(
        gateway: RunningGateway) -> None:
    _, get_headers, get_body = _exchange(gateway, "GET", "/health/live")
    port = int(gateway.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"HEAD /health/live HTTP/1.1\r\nhost: t\r\n\r\n")
        status, headers, _, rest = _read_answer(sock, b"", with_body=False)
        assert status == 200  # it was 405: only GET was routed
        assert headers["content-length"] == get_headers["content-length"] == str(len(get_body))
        assert headers["content-type"] == get_headers["content-type"]
        assert "transfer-encoding" not in headers and "connection" not in headers  # kept alive, not chunked
        sock.settimeout(0.3)  # no body bytes follow the head
        with pytest.raises(TimeoutError):
            rest += sock.recv(65536)
        assert rest == b""
        sock.settimeout(5)
        sock.sendall(b"GET /health/live HTTP/1.1\r\nhost: t\r\n\r\n")  # the same connection answers the next one
        status, _, body, rest = _read_answer(sock, rest, with_body=True)
        assert status == 200 and body == get_body and rest == b""


@pytest.mark.parametrize("path", ["/health/ready", "/health", "/v1/models", "/models", "/v1/models/", "/v1/models/mock",
                                  "/metrics", "/admin/deployments", "/admin/tenants"])
def test_head_answers_every_get_route_exact_and_prefix_alike(gateway: RunningGateway, path: str) -> None:
    get_status, get_headers, get_body = _exchange(gateway, "GET", path)
    status, headers, body = _exchange(gateway, "HEAD", path)
    assert (status, body) == (get_status, b"")
    assert headers["content-length"] == get_headers["content-length"] == str(len(get_body))


def test_head_on_an_admin_item_is_answered_by_its_get(gateway: RunningGateway) -> None:
    # the item handlers branch on the method: HEAD reaches them as a GET, not as an unknown method
    tenant = requests.post(gateway.url + "/admin/tenants", json={"name": "head-check"}, timeout=5).json()
    get_status, get_headers, _ = _exchange(gateway, "GET", f"/admin/tenants/{tenant['id']}")
    status, headers, body = _exchange(gateway, "HEAD", f"/admin/tenants/{tenant['id']}")
    assert (status, body) == (get_status, b"") == (200, b"")
    assert headers["content-length"] == get_headers["content-length"]


def test_head_on_an_unknown_model_is_the_gets_404(gateway: RunningGateway) -> None:
    status, headers, body = _exchange(gateway, "HEAD", "/v1/models/no-such-model")
    assert status == 404 and body == b"" and int(headers["content-length"]) > 0


def test_a_405_lists_head_where_get_is_allowed(gateway: RunningGateway) -> None:
    status, headers, _ = _exchange(gateway, "POST", "/health/live")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, headers, _ = _exchange(gateway, "HEAD", "/v1/chat/completions")  # POST only: still a 405
    assert status == 405 and headers["allow"] == "POST"


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/admin/keys/sk_x", "DELETE, GET, HEAD, PATCH, POST"),  # an admin item: the methods its prefix takes
    ("POST", "/admin/tenants/t-1", "DELETE, GET, HEAD, PATCH"),
    ("DELETE", "/v1/models/gpt", "GET, HEAD"),
    ("GET", "/v1/chat/completions/", "POST"),  # a trailing slash, as the route lookup forgives it
])
def test_a_wrong_method_on_a_prefix_route_is_a_405_with_allow_too(
        gateway: RunningGateway, method: str, path: str, allow: str) -> None:
    status, headers, body = _exchange(gateway, method, path)  # it was a 404 "Unknown endpoint"
    assert status == 405 and headers["allow"] == allow, (status, headers, body)
    assert f"Method {method} is not allowed".encode() in body


def test_a_path_no_route_takes_is_still_a_404(gateway: RunningGateway) -> None:
    status, headers, body = _exchange(gateway, "PUT", "/admin/nothing/here")
    assert status == 404 and "allow" not in headers and b"Unknown endpoint PUT /admin/nothing/here" in body


class _Master:
    async def require_admin(self, headers: dict[str, str]) -> Principal:
        return Principal(key_id="master", is_admin=True)


@pytest.mark.parametrize("method", ["HEAD", "GET"])
async def test_a_failing_get_handler_answering_a_head_logs_the_head(
        method: str, caplog: pytest.LogCaptureFixture) -> None:
    """A HEAD reaches the GET handler as a GET (the admin items branch on the method); its log line still
    names the method the client sent (it said GET)."""
    async def broken(req: HttpRequest, principal: Principal) -> tuple[int, JSON]:
        raise KeyError("a bug")  # not an outage (an OSError is: a 503, see test_admin_guard)

    app = GatewayApp()
    app.route_prefix("GET", "/admin/things/", guarded(_Master(), broken))  # type: ignore[arg-type]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/admin/things/t-1", "headers": [], "query_string": b""}
    with caplog.at_level(logging.ERROR, "aigw.admin"):
        await app(scope, receive, send)
    assert sent[0]["status"] == 500
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [f"admin {method} /admin/things/t-1 failed"]
