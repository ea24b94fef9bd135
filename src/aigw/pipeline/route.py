"""The terminal of the pipeline: hand the request to the router, record what served it."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

from aigw import errors
from aigw.pipeline.context import ANSWER_BODY, Completed, RequestContext, Result, Streaming
from aigw.pipeline.deployment_caps import DeploymentCaps
from aigw.pipeline.rate_headers import add_headers
from aigw.pipeline.tenancy import ROUTE_CAPS, add_cut
from aigw.routing.router import Router, RouteRequest, Served
from aigw.types import JSON


class RouteTerminal:
    def __init__(self, router: Router) -> None:
        self.router = router

    async def handle(self, ctx: RequestContext) -> Result:
        caps: DeploymentCaps | None = ctx.state.get(ROUTE_CAPS)
        req = RouteRequest(model=ctx.model, body=ctx.body, endpoint=ctx.endpoint,
                           deadline_s=_remaining(ctx), headers=_forwarded(ctx), allowed=ctx.principal.allowed_models,
                           caps=caps)
        try:
            if ctx.stream:
                chunks, served = await self.router.open_stream(req)
                _record(ctx, served)
                return Streaming(_watch_usage(ctx, chunks, served))
            body, served = await self.router.complete(req)
        except (errors.GatewayError, asyncio.CancelledError) as err:
            if req.served is not None:  # calls that failed still reached upstreams (the limits stage asks)
                _tries(ctx, req.served)
            if isinstance(err, errors.DeploymentsFull) and caps is not None and caps.refused is not None:
                # the figures of the deployment that frees first (they replace the key's, if it has limits)
                add_headers(ctx.response_headers, caps.refused)
            elif isinstance(err, errors.TooLargeForLimit) and caps is not None:
                await caps.too_large_headers(ctx.response_headers)  # the deployment's tokens, not the key's
            raise
        _record(ctx, served)
        usage = body.get("usage")
        tier = body.get("service_tier")
        if isinstance(tier, str):
            ctx.service_tier = tier
        if isinstance(usage, dict):
            ctx.usage = usage
        # kept for the ledger's local count, should its usage be absent or unreadable (null counts: some servers
        # and proxies); the stages after may change or drop the body. A reference, not a copy
        ctx.state[ANSWER_BODY] = body
        return Completed(body)


def _remaining(ctx: RequestContext) -> float | None:
    """What is left of the client's whole-request limit once the stages before the router have run (a
    semantic cache's embedding, a slow store): the limit counts from the request's arrival."""
    if ctx.deadline_s is None:
        return None
    left = ctx.deadline_s - (time.monotonic() - ctx.started)
    if left <= 0:
        raise errors.UpstreamTimeout(f"no upstream could be called within the request's {ctx.deadline_s:g} s "
                                     "timeout (0 attempts)")
    return left


def _forwarded(ctx: RequestContext) -> dict[str, str]:
    out = {"x-request-id": ctx.request_id}
    if (tp := ctx.headers.get("traceparent")) and valid_traceparent(tp):
        out["traceparent"] = tp
        if (state := ctx.headers.get("tracestate")) and len(state) <= _MAX_TRACE_HEADER:
            out["tracestate"] = state  # the caller's vendors' state travels with its trace
    return out


_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?")
_MAX_TRACE_HEADER = 512


def valid_traceparent(value: str) -> bool:
    """A W3C ``traceparent`` that parses (https://www.w3.org/TR/trace-context/#traceparent-header): lower-case
    hex, a version other than ``ff`` (``00`` with nothing after its four fields), ids not all zero. Any other
    value is not sent on: a receiver that cannot parse it starts a new trace instead."""
    m = _TRACEPARENT.fullmatch(value) if len(value) <= _MAX_TRACE_HEADER else None
    if m is None:
        return False
    version, trace_id, parent_id, rest = m.groups()
    return (version != "ff" and not (version == "00" and rest is not None)
            and trace_id != "0" * 32 and parent_id != "0" * 16)


def _record(ctx: RequestContext, served: Served) -> None:
    ctx.served_by = served.deployment
    ctx.served_model = served.model
    ctx.first_token_s = served.first_token_s
    _tries(ctx, served)


def _tries(ctx: RequestContext, served: Served) -> None:
    """What the router tried, answered or not: attempts, retries, fallbacks and the time spent upstream."""
    ctx.attempts, ctx.retries, ctx.fallbacks = served.attempts, served.retries, served.fallbacks
    ctx.upstream_s = served.upstream_s
    if served.cut:  # calls that broke off after their upstream took them: each is billed its prompt
        add_cut(ctx, served.cut, ctx.body)


async def _watch_usage(ctx: RequestContext, chunks: AsyncIterator[JSON], served: Served) -> AsyncIterator[JSON]:
    """Pick the usage out of the stream as it passes, and the upstream time at its end."""
    try:
        async for chunk in chunks:
            usage = chunk.get("usage")
            if usage:
                ctx.usage = usage
                tier = chunk.get("service_tier")  # the last chunk says which tier served (and bills) it
                if isinstance(tier, str):
                    ctx.service_tier = tier
            yield chunk
    finally:
        ctx.upstream_s = served.upstream_s
