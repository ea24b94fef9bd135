"""Accounting: one spend record per finished request, queued for the ledger.

Runs for every outcome (success, refusal, upstream error, client gone), for
every caller including the master key. It only builds a row and appends it to
the ledger's buffer: the database write happens in batches, off the request
path. While a stream passes it keeps the streamed text, so a stream cut short
(or a provider that reports no usage) is still charged by a local count.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aigw.pipeline.context import RequestContext
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.stage import Stage
from aigw.pipeline.tenancy import SERVICE, STREAM_TEXT, TenancyServices, measure
from aigw.stores.base import SpendRecord
from aigw.stores.sql_ledger import as_row
from aigw.types import JSON, Clock


class AccountingStage(Stage):
    name = "accounting"

    def __init__(self, svc: TenancyServices, clock: Clock) -> None:
        self.svc = svc
        self.clock = clock

    def on_stream(self, ctx: RequestContext, chunks: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
        return _keep_text(ctx, chunks)

    async def on_finish(self, ctx: RequestContext) -> None:
        ledger = self.svc.ledger
        if ledger is None:
            return
        ledger.record(as_row(self.record_for(ctx)))  # a tuple: untracked by the GC while buffered

    def record_for(self, ctx: RequestContext) -> SpendRecord:
        m = measure(ctx, self.svc)
        t = m.tokens
        p, d, err = ctx.principal, ctx.served_by, ctx.error
        latency_ms = (time.monotonic() - ctx.started) * 1000
        upstream_ms = ctx.upstream_s * 1000
        end = self.clock.now()
        status, kind = 200, ""
        if err is not None:  # a client that went away is 499, as in nginx's logs
            gone = err.code == "client_disconnected"
            status, kind = (499, "client_disconnected") if gone else (err.status, err.kind)
        return SpendRecord(
            request_id=ctx.request_id, ts_start=end - latency_ms / 1000, ts_end=end,
            tenant_id=p.tenant_id, project_id=p.project_id, key_id=p.key_id, key_prefix=p.key_prefix,
            model=ctx.model, served_model=ctx.served_model, deployment_id=d.id if d else "",
            provider=d.provider if d else "", endpoint=ctx.endpoint,
            prompt_tokens=t.prompt, completion_tokens=t.completion, cached_tokens=t.cached_input,
            cache_write_tokens=t.cache_write, reasoning_tokens=t.reasoning,
            cost_nano=m.cost_nano, cost_saved_nano=m.cost_saved_nano,
            latency_ms=round(latency_ms, 3), upstream_ms=round(upstream_ms, 3),
            overhead_ms=round(max(0.0, latency_ms - upstream_ms), 3),
            status=status, error_kind=kind,
            cache_hit=ctx.handled_by == "cache", handled_by=ctx.handled_by, retries=ctx.retries,
            fallbacks=len(ctx.fallbacks), stream=ctx.stream, usage_source=m.source,
        )


async def _keep_text(ctx: RequestContext, chunks: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
    kept: list[str] = []
    ctx.state[STREAM_TEXT] = kept
    async for chunk in chunks:
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content") or choice.get("text")
            if isinstance(text, str):
                kept.append(text)
            for call in delta.get("tool_calls") or ():
                args = (call.get("function") or {}).get("arguments")
                if isinstance(args, str):
                    kept.append(args)
        yield chunk


def build(deps: StageDeps) -> Stage | None:
    svc = deps.services.get(SERVICE)
    if not isinstance(svc, TenancyServices) or svc.ledger is None:
        return None
    return AccountingStage(svc, deps.clock)
