"""The ASGI application: a route table, lifespan hooks and nothing else.

Routes are exact (method, path) lookups plus a few prefixes, so dispatch costs
one dict lookup per request. HEAD is answered wherever GET is (RFC 9110 9.3.2),
by the GET handler with the same status and headers; the server drops the body
(the scope still says HEAD: aigw's server and uvicorn both read it there).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aigw import errors
from aigw.http.request import HttpRequest, Receive, Scope, Send
from aigw.http.respond import send_json
from aigw.http.wire_openai import error_body
from aigw.schema import anthropic as anthropic_wire

log = logging.getLogger("aigw.http")

Handler = Callable[[HttpRequest, Send], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]
Unrouted = Callable[[int, float], None]  # (status, seconds since arrival) of a request no route took


class GatewayApp:
    def __init__(self, on_startup: list[Hook] | None = None, on_shutdown: list[Hook] | None = None) -> None:
        self._exact: dict[tuple[str, str], Handler] = {}
        self._prefix: list[tuple[str, str, Handler]] = []
        self.on_startup = on_startup or []
        self.on_shutdown = on_shutdown or []
        self.state: dict[str, Any] = {}
        self.on_unrouted: Unrouted | None = None  # metrics: a scanner or a misconfigured client shows

    def route(self, method: str, path: str, handler: Handler) -> None:
        self._exact[(method, path)] = handler
        if path.startswith("/v1/"):  # also answer without the /v1 prefix, as OpenAI-style clients sometimes send
            self._exact.setdefault((method, path[3:]), handler)

    def route_prefix(self, method: str, prefix: str, handler: Handler) -> None:
        self._prefix.append((method, prefix, handler))

    def _find(self, method: str, path: str) -> Handler | None:
        handler = self._exact.get((method, path))
        if handler is None and len(path) > 1 and path.endswith("/"):
            handler = self._exact.get((method, path.rstrip("/")))
        if handler is None:
            for m, prefix, h in self._prefix:
                if m == method and path.startswith(prefix):
                    return h
        return handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            req = HttpRequest(scope, receive)
            handler = self._find(req.method, req.path)
            if handler is None:
                if req.method != "HEAD" or (handler := self._find("GET", req.path)) is None:
                    await self._not_found(req, send)
                    return
                req.method = "GET"  # answered as a GET (the admin items branch on it); logs say req.sent_method
            await handler(req, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _not_found(self, req: HttpRequest, send: Send) -> None:
        """No route for this method: a 405 with ``Allow`` when the path takes others (exact or prefix), else 404.
        Only a miss comes here, so a found route pays nothing for it."""
        path = req.path
        bare = path.rstrip("/") if len(path) > 1 else path  # as ``_find`` tries it
        allowed = {m for (m, p) in self._exact if p in (path, bare)}
        allowed.update(m for m, prefix, _ in self._prefix if path.startswith(prefix))
        if "GET" in allowed:
            allowed.add("HEAD")
        headers = [(b"x-request-id", req.request_id.encode())]
        if allowed:  # RFC 9110: a 405 says which methods the path takes
            err: errors.GatewayError = errors.InvalidRequest(f"Method {req.method} is not allowed on {path}.",
                                                             status=405)
            headers.append((b"allow", ", ".join(sorted(allowed)).encode()))
        else:
            err = errors.NotFound(f"Unknown endpoint {req.method} {path}.")
        if "anthropic-version" in req.headers:  # an Anthropic SDK (it always sends one): its error shape
            headers.append((b"request-id", req.request_id.encode()))
            await send_json(send, err.status, anthropic_wire.render_error(err, request_id=req.request_id)[1], headers)
            return
        await send_json(send, err.status, error_body(err), headers)
        if self.on_unrouted is not None:
            self.on_unrouted(err.status, time.monotonic() - req.arrived)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    for hook in self.on_startup:
                        await hook()
                except errors.StartupError as exc:  # explained by its message
                    log.error("start-up failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for hook in reversed(self.on_shutdown):
                    try:
                        await hook()
                    except Exception:
                        log.exception("shutdown hook failed")
                await send({"type": "lifespan.shutdown.complete"})
                return
