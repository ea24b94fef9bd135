"""Accounting: one spend record per finished request, queued for the ledger.

Runs for every outcome (success, refusal, upstream error, client gone), for
every caller including the master key. It only builds a row and appends it to
the ledger's buffer: the database write happens in batches, off the request
path. While a stream passes it keeps the streamed text, so a stream cut short
(or a provider that reports no usage) is still charged by a local count; a whole
stream whose upstream reported no usage (it ignores ``include_usage``) ends with a
usage chunk of that count, so a client that asked for usage gets what it is billed
(the API layer hides the chunk from one that did not ask, as it hides the upstream's). A whole answer
without usage likewise carries that count as its ``usage``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from aigw.accounting.tokens import calls_of, reasoning_of
from aigw.accounting.usage import Tokens, canonical_usage, tokens_from_usage
from aigw.pipeline.context import RequestContext
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.side_calls import SIDE_CALLS, side_rows
from aigw.pipeline.stage import Stage
from aigw.pipeline.tenancy import BUDGET_DONE, CUT, SERVICE, STREAM_TEXT, StreamText, TenancyServices, measure
from aigw.schema.anthropic import PRIVATE_KEY, START_USAGE
from aigw.schema.openai import call_text
from aigw.stores.base import SpendRecord
from aigw.stores.sql_ledger import day_of, new_record_id
from aigw.stores.sqlite.ledger_rows import COLUMNS
from aigw.types import JSON, Clock


class AccountingStage(Stage):
    name = "accounting"

    def __init__(self, svc: TenancyServices, clock: Clock) -> None:
        self.svc = svc
        self.clock = clock

    async def on_response(self, ctx: RequestContext, body: JSON) -> JSON:
        """A whole answer whose upstream reported no (readable) usage gets the local count the ledger bills (the
        same memoised count), as a stream gets its usage chunk: not zeros, nor nothing, while a bill is kept."""
        if ctx.handled_by or tokens_from_usage(ctx.usage) is not None:
            return body
        m = measure(ctx, self.svc)
        if m.source != "local":
            return body
        # a copy: the router's body (ANSWER_BODY, counted by a later output retry) stays as it came
        return {**body, "usage": canonical_usage(m.tokens, ctx.endpoint != "embeddings")}

    def on_stream(self, ctx: RequestContext, chunks: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
        return _keep_text(ctx, chunks, self.svc)

    async def on_finish(self, ctx: RequestContext) -> None:
        ledger = self.svc.ledger
        if ledger is None:
            return
        row = self.row_for(ctx)
        ledger.record(row)  # a tuple: untracked by the GC while buffered
        if SIDE_CALLS in ctx.state:  # calls a stage made for the request (the cache's embedding): rows of their own
            for side in side_rows(ctx, self.svc, row):
                ledger.record(side)

    def row_for(self, ctx: RequestContext) -> tuple[Any, ...]:
        """The ledger row of a finished request, built straight in ``COLUMNS`` order.

        Runs once per request on the event loop, so it builds the tuple directly rather than
        a ``SpendRecord`` first (``record_for`` gives that view, for reading and tests).
        """
        m = measure(ctx, self.svc)
        t = m.tokens
        p, d, err = ctx.principal, ctx.served_by, ctx.error
        if d is None and (cut := ctx.state.get(CUT)):  # no answer, but a call was billed: name its deployment
            d = cut[-1][0]
        latency_ms = (time.monotonic() - ctx.started) * 1000
        upstream_ms = ctx.upstream_s * 1000
        end = self.clock.now()
        status, kind = 200, ""
        if err is not None:  # a client that went away is 499, as in nginx's logs
            gone = err.code == "client_disconnected"
            status, kind = (499, "client_disconnected") if gone else (err.status, err.kind)
        cached, write, reasoning = t.cached_input, t.cache_write, t.reasoning
        start = end - latency_ms / 1000
        # the row's day is the budget window the call was charged to: when its budget was reserved (the
        # counters settle it there, docs/tenancy.md), else when it started; never when it ended, or a
        # call across midnight would be in yesterday's counters but in today's rollups (and seeds)
        reserved = ctx.state.get(BUDGET_DONE)
        day = day_of(reserved[2] if reserved is not None else start)
        return (
            new_record_id(), ctx.request_id, start, end, day, p.tenant_id,
            p.project_id, p.key_id, p.key_prefix, ctx.model, ctx.served_model, d.id if d else "",
            d.provider if d else "", ctx.endpoint, t.fresh_input + cached + write, t.output + reasoning, cached,
            write, reasoning, m.cost_nano, m.cost_saved_nano, round(latency_ms, 3), round(upstream_ms, 3),
            round(latency_ms - upstream_ms, 3) if latency_ms > upstream_ms else 0.0, status, kind,
            1 if ctx.handled_by == "cache" else 0, ctx.handled_by, ctx.retries, len(ctx.fallbacks),
            1 if ctx.stream else 0, m.source,
        )

    def record_for(self, ctx: RequestContext) -> SpendRecord:
        """The same row as a ``SpendRecord``."""
        row = dict(zip(COLUMNS, self.row_for(ctx), strict=True))
        del row["day"]
        row["cache_hit"], row["stream"] = bool(row["cache_hit"]), bool(row["stream"])
        return SpendRecord(**row)


async def _keep_text(ctx: RequestContext, chunks: AsyncIterator[JSON], svc: TenancyServices) -> AsyncIterator[JSON]:
    kept = StreamText()
    ctx.state[STREAM_TEXT] = kept
    last: JSON | None = None
    async for chunk in chunks:
        kept.chunks += 1
        last = chunk
        if kept.chunks == 1 and PRIVATE_KEY in chunk:  # the input split known up front, should no usage follow
            kept.start_usage = (chunk[PRIVATE_KEY] or {}).get(START_USAGE)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content") or choice.get("text")
            if isinstance(text, str):
                kept.content.append(text)
            refusal = delta.get("refusal")  # billed as output, like the content it stands in for
            if isinstance(refusal, str):
                kept.content.append(refusal)
            thought = reasoning_of(delta)
            if isinstance(thought, str):
                kept.reasoning.append(thought)
            for call in calls_of(delta):
                args = call_text(call)  # a function's arguments or a custom tool's input
                if args is not None:
                    kept.content.append(args)
        yield chunk
    if last is not None and ctx.usage is None:  # whole, and no chunk carried usage (the router notes any)
        yield _usage_chunk(last, measure(ctx, svc).tokens)


def _usage_chunk(last: JSON, t: Tokens) -> JSON:
    """The usage chunk an OpenAI stream ends with (``choices`` empty), of the local count the ledger bills."""
    usage = canonical_usage(t)
    head = {k: v for k, v in last.items() if k not in ("choices", "usage", PRIVATE_KEY)}
    return {**head, "choices": [], "usage": usage}


def build(deps: StageDeps) -> Stage | None:
    svc = deps.services.get(SERVICE)
    if not isinstance(svc, TenancyServices) or svc.ledger is None:
        return None
    return AccountingStage(svc, deps.clock)
