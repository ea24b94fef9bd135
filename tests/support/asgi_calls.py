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
