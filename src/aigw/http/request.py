"""The inbound HTTP request as handlers see it: headers, query, a bounded body."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

import orjson

from aigw import errors
from aigw.http.http1_exchange import EXCHANGE, Exchange
from aigw.ids import time_ordered_id
from aigw.types import JSON

Receive = Any
Send = Any
Scope = dict[str, Any]

JSON_TYPE = (b"content-type", b"application/json")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class HttpRequest:
    __slots__ = ("_query", "arrived", "body", "exchange", "headers", "method", "path", "receive", "request_id",
                 "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.arrived = time.monotonic()  # a request's latency and deadline count from here, body read included
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        raw = scope["headers"]
        self.headers: dict[str, str] = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw}
        if len(self.headers) != len(raw):  # a name sent on several lines: rare, so handled only then
            self.headers = _joined(raw)
        rid = self.headers.get("x-request-id", "")
        self.request_id = rid if rid and _SAFE_ID.match(rid) else time_ordered_id("req_")
        self.body = b""
        self._query: dict[str, str] | None = None
        self.exchange: Exchange | None = scope.get(EXCHANGE)  # aigw's own server: its direct calls

    @property
    def sent_method(self) -> str:
        """The method as the client sent it, for log lines: ``method`` says GET for a HEAD its GET handler answers."""
        return str(self.scope["method"])

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            self._query = dict(parse_qsl(self.scope.get("query_string", b"").decode("latin-1")))
        return self._query

    async def read_body(self, limit: int) -> bytes:
        """Read the whole body, refusing anything over ``limit`` bytes before buffering it."""
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise errors.PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        parts: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise errors.InvalidRequest("client disconnected while sending the body", code="client_disconnected")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise errors.PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
                parts.append(chunk)
            if not message.get("more_body", False):
                break
        self.body = parts[0] if len(parts) == 1 else b"".join(parts)
        return self.body

    async def json(self, limit: int) -> JSON:
        raw = self.body_now(limit)
        return json_object(raw if raw is not None else await self.read_body(limit))

    def body_now(self, limit: int) -> bytes | None:
        """The whole body without awaiting it, when aigw's own server has all of it already (it came with the
        head); None: ``read_body``. Over ``limit``: the same 413 as ``read_body``."""
        ex = self.exchange
        body = ex.body_now() if ex is not None else None
        if body is None:
            return None
        if len(body) > limit:
            raise errors.PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        self.body = body
        return body

    def respond_now(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        """A whole JSON answer sent in one call, as ``respond.send_bytes`` would send it, when aigw's own server
        takes it that way; False: send it with ``send_bytes`` (uvicorn, or an answer already begun)."""
        ex = self.exchange
        if ex is None or ex.started:
            return False
        ex.respond(status, body, headers, JSON_TYPE[1])
        return True


def whole_answer_head(body: bytes, headers: Iterable[tuple[bytes, bytes]],
                      content_type: tuple[bytes, bytes] = JSON_TYPE) -> list[tuple[bytes, bytes]]:
    """The headers of an answer sent whole: its type and length, then ``headers``."""
    return [content_type, (b"content-length", b"%d" % len(body)), *headers]


def _joined(raw: Any) -> dict[str, str]:
    """Headers with each repeated name's lines joined in order by ", ", as HTTP reads them (RFC 9110
    5.3; ``cookie`` lines by "; ", RFC 6265 5.4), so no line of a repeated header is lost."""
    out: dict[str, str] = {}
    for k, v in raw:
        name, value = k.decode("latin-1"), v.decode("latin-1")
        if name in out:
            out[name] += ("; " if name == "cookie" else ", ") + value
        else:
            out[name] = value
    return out


def json_object(raw: bytes) -> JSON:
    """A request body as a JSON object, or the client's error saying why it is not one."""
    if not raw:
        raise errors.InvalidRequest("Request body is empty; expected a JSON object.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidRequest(f"Request body is not valid JSON: {exc.msg} (at byte {exc.pos}).") from None
    if not isinstance(data, dict):
        raise errors.InvalidRequest("Request body must be a JSON object.")
    return data
