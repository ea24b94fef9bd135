"""Upstream calls a stage makes on behalf of a request (the semantic cache's embedding of the last turn).

Such a call costs money like the request's own, so it is billed to the same key, project and tenant: the
stage notes it on the context (``note``), the limits and budget stages settle its tokens and cost beside the
request's (``side_totals``), and the accounting stage writes it a ledger row of its own (``side_rows``), with
the request's row id and request id plus ``.1``, ``.2``... (so a replayed batch adds nothing twice) and an
endpoint the rollups count no request for (``SIDE_ENDPOINTS``). A request that made none pays one dict lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aigw.accounting.usage import Tokens, tokens_from_usage
from aigw.config.models import Deployment
from aigw.pipeline.context import RequestContext
from aigw.pipeline.tenancy import TenancyServices
from aigw.stores.sqlite.ledger_rows import CACHE_EMBEDDING, COLUMNS
from aigw.types import JSON

SIDE_CALLS = "side_calls"  # ctx.state: [SideCall], in the order they were made
_BILLED = "side_calls.billed"  # ctx.state: [(SideCall, Tokens, cost_nano, source)], worked out once
__all__ = ["CACHE_EMBEDDING", "SideCall", "note", "side_rows", "side_totals"]


@dataclass(slots=True)
class SideCall:
    """One upstream call: what it was for (the ledger's ``endpoint``), where it went, what it reported."""

    endpoint: str
    model: str  # the public model asked for
    deployment: Deployment
    usage: JSON | None  # as the upstream reported it; None: counted locally from ``text``
    text: str  # what was sent (for a local count)
    latency_s: float = 0.0
    upstream_s: float = 0.0
    retries: int = 0
    status: int = 200  # a call cut short after its upstream took it: the error that ended it (billed all the same)
    kind: str = ""


def note(ctx: RequestContext, call: SideCall) -> None:
    """Bill ``call`` to ``ctx``'s caller when the request finishes."""
    ctx.state.setdefault(SIDE_CALLS, []).append(call)


def _billed(ctx: RequestContext, svc: TenancyServices) -> list[tuple[SideCall, Tokens, int, str]]:
    done: list[tuple[SideCall, Tokens, int, str]] | None = ctx.state.get(_BILLED)
    if done is None:
        done = ctx.state[_BILLED] = []
        for call in ctx.state.get(SIDE_CALLS) or ():
            tokens, source = tokens_from_usage(call.usage), "provider"
            if tokens is None:  # no usage (an upstream that reports none, a call cut short): count what was sent
                tokens, source = Tokens(fresh_input=svc.tokens.count_text(call.text)), "local"
            d = call.deployment
            cost = svc.prices.for_deployment(d.id, d.model).cost_nano(tokens) if tokens.total else 0
            done.append((call, tokens, cost, source))
    return done


def side_totals(ctx: RequestContext, svc: TenancyServices) -> tuple[int, int]:
    """(tokens, nano-dollars) of the request's side calls: (0, 0) without any."""
    if SIDE_CALLS not in ctx.state:
        return 0, 0
    billed = _billed(ctx, svc)
    return sum(t.total for _, t, _, _ in billed), sum(cost for _, _, cost, _ in billed)


def side_rows(ctx: RequestContext, svc: TenancyServices, row: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """The ledger rows of the side calls of the request whose own row is ``row`` (``COLUMNS`` order): same
    caller and day (the budget window it was charged to), ids ``row``'s plus ``.1``, ``.2``..."""
    if SIDE_CALLS not in ctx.state:
        return []
    at = _AT
    out = []
    for n, (call, t, cost, source) in enumerate(_billed(ctx, svc), start=1):
        d = call.deployment
        latency_ms, upstream_ms = round(call.latency_s * 1000, 3), round(call.upstream_s * 1000, 3)
        start = row[at["ts_start"]]
        out.append((
            f"{row[at['id']]}.{n}", f"{row[at['request_id']]}.{n}", start, start + call.latency_s, row[at["day"]],
            row[at["tenant_id"]], row[at["project_id"]], row[at["key_id"]], row[at["key_prefix"]], call.model,
            d.name, d.id, d.provider, call.endpoint, t.prompt, t.completion, t.cached_input, t.cache_write,
            t.reasoning, cost, 0, latency_ms, upstream_ms, max(0.0, round(latency_ms - upstream_ms, 3)), call.status,
            call.kind,
            0, "", call.retries, 0, 0, source,
        ))
    return out


_AT = {c: COLUMNS.index(c) for c in ("id", "request_id", "ts_start", "day", "tenant_id", "project_id", "key_id",
                                      "key_prefix")}
