"""Call one of the gateway's HTTP handlers directly, without a server: a GET with a bearer key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aigw.http.request import HttpRequest


async def get_with_key(handler: Callable[[HttpRequest, Any], Awaitable[None]], path: str, key: str,
                       query: bytes = b"") -> tuple[int, bytes]:
    """``handler``'s status and body for ``GET path?query`` sent with ``Authorization: Bearer key``."""
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": path, "query_string": query,
                             "headers": [(b"authorization", f"Bearer {key}".encode())]}
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    await handler(HttpRequest(scope, receive), send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def call_app(app: Any, method: str, path: str, body: bytes = b"",
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """A whole app's answer to one request, without a server: status, headers and body (JSON when it is)."""
    import orjson

    raw_headers = [(b"content-type", b"application/json")]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "method": method, "path": path, "query_string": b"", "headers": raw_headers}
    inbox = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop() if inbox else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    answer = b"".join(m.get("body", b"") for m in sent[1:])
    got = {k.decode().lower(): v.decode() for k, v in sent[0].get("headers", [])}
    return int(sent[0]["status"]), got, orjson.loads(answer) if answer.startswith(b"{") else answer
