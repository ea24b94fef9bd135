"""One request's way through the HTTP layer, the same for every inbound API.

authenticate -> read + parse (the API's own format) -> pipeline -> render, and
errors rendered in the client's wire format. No business logic here: that lives
in the pipeline's stages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import orjson

from aigw import errors
from aigw.http.auth import Authenticator, refusal_reason
from aigw.http.http1_exchange import CANCEL_ON_DISCONNECT, CLIENT_GONE
from aigw.http.keepalive import KeepAlive, KeepAlives
from aigw.http.request import HttpRequest, Send, json_object
from aigw.http.respond import (
    ClientGone,
    Headers,
    header_list,
    send_bytes,
    send_frames_whole,
    send_json,
    send_stream,
    stream_start,
)
from aigw.http.retry_headers import retry_headers
from aigw.pipeline.context import Completed, Endpoint, Prerendered, Principal, Replay, RequestContext
from aigw.pipeline.pipeline import Pipeline
from aigw.types import JSON

log = logging.getLogger("aigw.http")
CLIENT_CLOSED = 499  # nginx's "client closed request", as the observe stage counts it


@dataclass(slots=True)
class Parsed:
    """An inbound body turned canonical, with what the pipeline needs to know up front."""

    body: JSON
    model: str
    stream: bool
    state: dict[str, object] = field(default_factory=dict)  # copied onto ctx.state


class ApiFormat(Protocol):
    """How one inbound API (OpenAI, Anthropic) reads requests and writes answers."""

    name: str
    canonical: bool  # its answer body is the canonical (OpenAI) body: a Prerendered one goes out as is
    keepalive: bytes  # what a stream sends while it has nothing to send (``keepalive.py``)
    @property
    def own_headers(self) -> Callable[[str, dict[str, str]], Headers] | None:
        """Headers this API's own servers send beside every answer (made from the request id and the
        stages' headers), or None: OpenAI's are the stages' own."""

    def render_error(self, err: errors.GatewayError, request_id: str | None = None) -> tuple[int, JSON]:
        """(status, body); ``request_id`` goes into the body where the API's own errors carry it."""
        ...

    def render_body(self, body: JSON, ctx: RequestContext) -> JSON: ...

    def frames(self, chunks: AsyncIterator[JSON], ctx: RequestContext) -> AsyncIterator[bytes]: ...

    def stream_error(self, err: errors.GatewayError) -> bytes:
        """The error event that ends a stream broken off by the gateway itself (a shutdown)."""
        ...


# (api, status, seconds since arrival, why the caller was refused or ""): a refusal before any caller
Refused = Callable[[str, int, float, str], None]


class Flow:
    def __init__(self, auth: Authenticator, pipeline: Pipeline, max_body_bytes: int,
                 refused: Refused | None = None, keepalive_s: float = 0.0) -> None:
        self.auth = auth
        self.pipeline = pipeline
        self.max_body = max_body_bytes
        self.refused = refused  # counts what no finish hook sees: a request with no known caller
        self.keepalives = KeepAlives(keepalive_s) if keepalive_s > 0 else None  # for silent streams

    async def handle(
        self, req: HttpRequest, send: Send, api: ApiFormat, endpoint: Endpoint,
        parse: Callable[[JSON, bytes], Parsed],
    ) -> None:
        ctx: RequestContext | None = None
        principal: Principal | None = None
        body: JSON | None = None
        status = 0  # what a request without a context was answered (no finish hook counts it)
        reason = ""  # why it was refused its caller (``refusal_reason``), if it was
        keepalive: KeepAlive | None = None  # a stream's: its head may go out before its answer is known
        req.scope[CANCEL_ON_DISCONNECT] = True  # a client gone before its answer stops the upstream call too
        try:
            principal = self.auth.known(req.headers) or await self.auth.authenticate(req.headers)
            raw = req.body_now(self.max_body)  # aigw's server has it already, else it is read
            body = json_object(raw) if raw is not None else await req.json(self.max_body)
            parsed = parse(body, req.body)
            check_model_allowed(principal, parsed.model)
            ctx = RequestContext(
                request_id=req.request_id, api=api.name, endpoint=endpoint,  # type: ignore[arg-type]
                body=parsed.body, model=parsed.model, stream=parsed.stream,
                principal=principal, headers=req.headers, deadline_s=_deadline(req.headers, parsed.body),
                state=parsed.state, source=(req.body, parsed.body), started=req.arrived,
            )
            if parsed.stream and self.keepalives is not None:
                keepalive = self.keepalives.watch(send, api.keepalive, partial(_early_start, ctx, api))
            result = await self.pipeline.run(ctx)
            early = keepalive is not None and keepalive.started  # its head went out with a keep-alive
            if keepalive is not None and not early and isinstance(result, Completed | Replay):
                keepalive.close()  # an answer whole at once: nothing to keep alive
            headers = [] if early else answer_headers(ctx, api)
            if isinstance(result, Completed):
                if api.canonical and isinstance(result, Prerendered) and result.raw is not None:
                    answer = result.raw  # e.g. a cache hit: the stored bytes
                else:
                    answer = orjson.dumps(api.render_body(result.body, ctx))
                if not req.respond_now(200, answer, headers):
                    await send_bytes(send, 200, answer, headers)
            elif isinstance(result, Replay) and not early:
                await send_frames_whole(send, api.frames(result.chunks, ctx), headers)
            else:
                await send_stream(req.receive, send, api.frames(result.chunks, ctx), headers,
                                  interrupted=lambda: api.stream_error(_shut_down()), keepalive=keepalive)
        except ClientGone:
            if ctx is not None:
                ctx.error = errors.GatewayError("client disconnected", code="client_disconnected")
        except asyncio.CancelledError:
            if req.scope.get(CLIENT_GONE):  # the client left before its answer: a 499 in the ledger and logs
                if ctx is None and principal is None:  # gone while its key was looked up: finish the lookup
                    principal = await self._caller(req)
                if ctx is None and principal is not None:  # gone before the pipeline: a known key's call all the same
                    ctx = _refused(req, api, endpoint, principal, body)
                if ctx is not None:
                    ctx.error = errors.GatewayError("client disconnected", code="client_disconnected")
                status = CLIENT_CLOSED
                raise
            # the server shut down and stopped waiting for this request
            gone = _shut_down()
            status = gone.status
            if ctx is not None:
                ctx.error = gone  # the ledger and the request log say so, not 200
            with contextlib.suppress(Exception):  # a 503 the client's SDK retries elsewhere, if nothing went out
                if keepalive is not None and keepalive.started:  # else an error event (without waiting on it)
                    keepalive.close()
                    await send(_last_part(api.stream_error(gone)))
                else:
                    await send_error(send, api, gone, req.request_id)
            raise
        except errors.GatewayError as err:
            if ctx is None and principal is not None:  # a known caller refused before the pipeline (bad body,
                ctx = _refused(req, api, endpoint, principal, body)  # a model it may not use): metered and billed
            if ctx is not None:
                ctx.error = err
            else:
                reason = refusal_reason(err)
            status = await send_failure(send, api, err, req.request_id, keepalive,
                                        tried_headers(ctx) if ctx is not None else None)
        except Exception as exc:
            log.exception("unexpected error handling %s %s (request %s, tenant %s)", req.sent_method, req.path,
                          req.request_id, principal.tenant_id or "-" if principal is not None else "-")
            internal = errors.UpstreamError(f"internal gateway error ({type(exc).__name__})", status=500)
            if ctx is not None:
                ctx.error = internal
            status = await send_failure(send, api, internal, req.request_id, keepalive)
        finally:
            if keepalive is not None:
                keepalive.close()
            if ctx is not None:
                if self.pipeline.finishes:
                    await self.pipeline.finish(ctx)
                if ctx.error is not None:
                    _forget_frames(ctx.error)
            elif status and self.refused is not None:  # no key, a refused key: seen in metrics all the same
                self.refused(api.name, status, time.monotonic() - req.arrived, reason)

    async def _caller(self, req: HttpRequest) -> Principal | None:
        """Who sent a request whose client left while its key was being looked up (None: nobody known)."""
        try:
            return await self.auth.authenticate(req.headers)
        except Exception:
            return None


async def send_error(send: Send, api: ApiFormat, err: errors.GatewayError, request_id: str,
                     extra: dict[str, str] | None = None) -> int:
    """Send ``err`` in the client's wire format; the status sent."""
    status, body = api.render_error(err, request_id)
    headers: Headers = [(b"x-request-id", request_id.encode()), *retry_headers(err, status)]
    if extra:  # e.g. x-ratelimit-* set by the limits stage before it refused
        headers.extend(header_list(extra))
    if api.own_headers is not None:
        headers.extend(api.own_headers(request_id, extra or {}))
    await send_json(send, status, body, headers)
    return status


async def send_failure(send: Send, api: ApiFormat, err: errors.GatewayError, request_id: str,
                       keepalive: KeepAlive | None, extra: dict[str, str] | None = None) -> int:
    """``send_error``, or, once a keep-alive sent a stream's head, the error event that ends the stream (a
    second status line cannot follow: the mid-stream failure's event is what the client's SDK raises on)."""
    if keepalive is not None and await keepalive.settle():
        await send(_last_part(api.stream_error(err)))
        return 200
    return await send_error(send, api, err, request_id, extra)


def _last_part(frame: bytes) -> dict[str, Any]:
    return {"type": "http.response.body", "body": frame, "more_body": False}


def _early_start(ctx: RequestContext, api: ApiFormat) -> dict[str, Any]:
    """The head of a stream sent before its answer, for a keep-alive: only what is known so far (the request
    id, the stages' headers such as the rate limits); who served it is not known yet."""
    return stream_start(answer_headers(ctx, api))


def answer_headers(ctx: RequestContext, api: ApiFormat) -> Headers:
    headers = served_headers(ctx)
    if api.own_headers is not None:
        headers += api.own_headers(ctx.request_id, ctx.response_headers)
    return headers


def tried_headers(ctx: RequestContext) -> dict[str, str]:
    """A failed request's headers: the stages' own, and how hard the router tried (attempts, retries and the
    fallback models, as an answer says them): a client can tell "no upstream was called" from "three failed"."""
    if not ctx.attempts:
        return ctx.response_headers
    tried = {"x-aigw-attempts": str(ctx.attempts)}
    if ctx.retries:
        tried["x-aigw-retries"] = str(ctx.retries)
    if ctx.fallbacks:
        tried["x-aigw-fallbacks"] = ",".join(ctx.fallbacks)
    return {**tried, **ctx.response_headers}


_SERVED = frozenset({"x-request-id", "x-aigw-provider", "x-aigw-model", "x-aigw-deployment",
                     "x-aigw-served-model", "x-aigw-attempts", "x-aigw-retries", "x-aigw-fallbacks",
                     "x-aigw-handled-by"})


def _forget_frames(err: BaseException | None) -> None:
    """A finished request's error keeps no frames: its traceback's (and the one's it was raised while handling)
    hold this call's frame, so the context, the request and its Exchange, in a cycle the GC alone would free."""
    for _ in range(8):  # a chain is one or two long; bounded all the same
        if err is None:
            return
        err.__traceback__ = None
        err = err.__context__


def _shut_down() -> errors.GatewayError:
    return errors.Unavailable("The gateway shut down before this request finished; retry it.",
                              code="gateway_shutdown", retry_after=1.0)


def served_headers(ctx: RequestContext) -> Headers:
    """Who served the answer and how, then the stages' own headers (which win on a name clash)."""
    out: Headers = [(b"x-request-id", ctx.request_id.encode("latin-1"))]
    d = ctx.served_by
    if d is not None:
        out += [(b"x-aigw-provider", d.provider.encode("latin-1")), (b"x-aigw-model", d.model.encode("latin-1")),
                (b"x-aigw-deployment", d.id.encode("latin-1")),
                (b"x-aigw-served-model", (ctx.served_model or d.name).encode("latin-1"))]
    if ctx.attempts > 1:
        out.append((b"x-aigw-attempts", b"%d" % ctx.attempts))
    if ctx.retries:
        out.append((b"x-aigw-retries", b"%d" % ctx.retries))
    if ctx.fallbacks:
        out.append((b"x-aigw-fallbacks", ",".join(ctx.fallbacks).encode("latin-1")))
    if ctx.handled_by:
        out.append((b"x-aigw-handled-by", ctx.handled_by.encode("latin-1")))
    extra = ctx.response_headers
    if not extra:
        return out
    if not _SERVED.isdisjoint(extra):
        out = [(k, v) for k, v in out if k.decode("latin-1") not in extra]
    out += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    return out


def _refused(req: HttpRequest, api: ApiFormat, endpoint: Endpoint, principal: Principal,
             body: JSON | None) -> RequestContext:
    """The context of a request refused before the pipeline ran, so that its finish hooks (metrics, request
    log, the spend ledger's row) see it like any other refusal."""
    body = body if isinstance(body, dict) else {}
    model = body.get("model")
    return RequestContext(request_id=req.request_id, api=api.name, endpoint=endpoint,  # type: ignore[arg-type]
                          body=body, model=model if isinstance(model, str) else "", principal=principal,
                          headers=req.headers, started=req.arrived)


def check_model_allowed(principal: Principal, model: str) -> None:
    allowed = principal.allowed_models
    if allowed is not None and model not in allowed:
        raise errors.PermissionDenied(f"This key may not use model `{model}`.", param="model")


def _deadline(headers: dict[str, str], body: JSON) -> float | None:
    """The client's whole-request limit: header ``x-aigw-timeout`` or body field ``timeout``
    (removed before the body goes upstream); with both, the smaller wins."""
    limits: list[float] = []
    if (raw := headers.get("x-aigw-timeout")) is not None:
        limits.append(_seconds(raw, "x-aigw-timeout"))
    if "timeout" in body:
        limits.append(_seconds(body.pop("timeout"), "timeout"))
    return min(limits) if limits else None


def _seconds(raw: object, name: str) -> float:
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise errors.InvalidRequest(f"{name} must be a number of seconds", param=name) from None
    if isinstance(raw, bool) or not 0 < value < math.inf:  # "inf" or 1e400 would be no deadline at all
        raise errors.InvalidRequest(f"{name} must be a positive, finite number of seconds", param=name)
    return value


def elapsed_ms(ctx: RequestContext) -> float:
    return (time.monotonic() - ctx.started) * 1000
