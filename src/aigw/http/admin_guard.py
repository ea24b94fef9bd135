"""What every admin endpoint shares: who may call it, how its body is read, how it answers, and the
audit line each change leaves.

``guarded`` wraps an endpoint: it authenticates an admin key (the master key, or a tenant admin's, which
``admin_scope`` limits to its own tenant), runs it, and answers JSON or a file, errors in the OpenAI
error shape. Endpoints that change something are wrapped with ``audit=True``.

An error that says when to come back carries ``Retry-After`` (and ``x-should-retry``) exactly as the
inference path's (``retry_headers``); a store that cannot be reached (``stores.failures.unreachable``) is a
503 ``store_unavailable`` with ``Retry-After: 1``, logged in one line; any other exception is a bug: a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from aigw import errors
from aigw.http.auth import Authenticator
from aigw.http.request import HttpRequest, Send, json_object
from aigw.http.respond import send_bytes, send_json
from aigw.http.retry_headers import retry_headers
from aigw.http.wire_openai import error_body
from aigw.pipeline.context import Principal
from aigw.stores.failures import unreachable
from aigw.types import JSON

log = logging.getLogger("aigw.admin")
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[HttpRequest, Send], Awaitable[None]]
MAX_BODY = 256 * 1024
STORE_RETRY_S = 1.0  # what a store outage's 503 asks the caller to wait (``Retry-After``)


def admin_scope(principal: Principal) -> str | None:
    """None: every tenant (master key). Else the one tenant this admin key may touch."""
    return principal.tenant_id or None


async def parse_body(req: HttpRequest, model: type[M]) -> M:
    return _validated(model, await req.json(MAX_BODY))


async def parse_optional_body(req: HttpRequest, model: type[M]) -> M:
    """``parse_body`` for calls whose body may be left out (then every field has its default)."""
    raw = await req.read_body(MAX_BODY)
    return model() if not raw.strip() else _validated(model, json_object(raw))


def _validated(model: type[M], data: JSON) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        msg = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        if first["type"] == "value_error":  # our own validators: their words, without pydantic's "Value error, "
            msg = str(first["ctx"]["error"])
        raise errors.InvalidRequest(f"{field}: {msg}" if field else msg, param=field) from None


class SavedUnannounced(errors.Unavailable):
    """A change saved whose follow-up failed (other replicas not told, a budget's spend not loaded): answered 503,
    and in the audit trail all the same, since it was made. ``saved``: the record's id and tenant."""

    def __init__(self, message: str, saved: JSON) -> None:
        super().__init__(message, retry_after=STORE_RETRY_S)
        self.saved = saved


@dataclass(frozen=True, slots=True)
class Download:
    """An admin answer that is a file rather than JSON (the spend report as CSV, say)."""

    body: bytes
    content_type: bytes
    filename: str
    headers: tuple[tuple[bytes, bytes], ...] = ()  # what the file has no room for (``X-Aigw-Has-More``...)


def guarded(auth: Authenticator, fn: Callable[[HttpRequest, Principal], Awaitable[tuple[int, JSON | Download]]],
            audit: bool = False) -> Handler:
    """Authenticate as an admin, run ``fn``, answer JSON (or its file); errors in the OpenAI error shape.
    ``audit``: a change; each one done is logged with who did it and what it touched (an audit trail)."""

    async def handler(req: HttpRequest, send: Send) -> None:
        headers = [(b"x-request-id", req.request_id.encode())]
        principal: Principal | None = None
        try:
            principal = await auth.require_admin(req.headers)
            status, body = await fn(req, principal)
        except errors.GatewayError as err:
            auth.refused("admin", err.status, err)
            if audit and principal is not None and isinstance(err, SavedUnannounced):
                _log_change(req, principal, err.status, err.saved)
            await send_json(send, err.status, error_body(err), [*headers, *retry_headers(err, err.status)])
            return
        except Exception as exc:
            tenant = principal.tenant_id or "-" if principal else "-"
            if unreachable(exc):  # an outage, not a bug: one line, and a 503 the caller may retry
                log.warning("admin %s %s: a store cannot be reached (%s: %s) (by %s, tenant %s, request %s)",
                            req.sent_method, req.path, type(exc).__name__, _one_line(exc), _who(principal),
                            tenant, req.request_id)
                down = store_unavailable(exc)
                await send_json(send, down.status, error_body(down), [*headers, *retry_headers(down, down.status)])
                return
            # a bug: a clean 500, logged with its stack trace, never sent one
            log.exception("admin %s %s failed (by %s, tenant %s, request %s)", req.sent_method, req.path,
                          _who(principal), tenant, req.request_id)
            internal = errors.UpstreamError(f"internal error ({type(exc).__name__})", status=500)
            await send_json(send, 500, error_body(internal), headers)
            return
        if audit:
            _log_change(req, principal, status, body)
        if isinstance(body, Download):
            headers.append((b"content-disposition", f'attachment; filename="{body.filename}"'.encode()))
            headers += body.headers
            await send_bytes(send, status, body.body, headers, (b"content-type", body.content_type))
            return
        await send_json(send, status, body, headers)

    return handler


def store_unavailable(exc: BaseException) -> errors.Unavailable:
    """The answer to a store outage (``stores.failures.unreachable``): the same call may work in a second. (A
    write whose connection was lost at its commit may have been made: repeating it is the caller's choice.)"""
    return errors.Unavailable(f"A store the gateway needs (its database or Redis) cannot be reached right now "
                              f"({type(exc).__name__}); retry the call in a moment.", code="store_unavailable",
                              retry_after=STORE_RETRY_S)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _who(principal: Principal | None) -> str:
    if principal is None:
        return "-"
    return f"key {principal.key_id}" if principal.key_id not in ("", "master") else "the master key"


def _log_change(req: HttpRequest, principal: Principal, status: int, body: JSON | Download) -> None:
    """One line per admin change: what, by whom, and the object and tenant it touched."""
    target = body if isinstance(body, dict) else {}
    obj = target.get("id") or req.path.rsplit("/", 1)[-1]
    tenant = target.get("tenant_id") or (obj if req.path.startswith("/admin/tenants") else "") or "-"
    log.info("admin change: %s %s -> %d, object %s, tenant %s, by %s (tenant %s), request %s", req.method,
             req.path, status, obj, tenant, _who(principal), principal.tenant_id or "-", req.request_id)
