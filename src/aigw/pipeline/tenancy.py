"""What the limits, budget and accounting stages share: their services and one measurement.

``app.py`` builds a ``TenancyServices`` and puts it in ``StageDeps.services``
under ``"tenancy"``. ``measure`` works out a finished request's tokens and cost
once and keeps the answer on the context, so the budget stage (which settles)
and the accounting stage (which writes the ledger) charge exactly the same sum.

One store call before and one after: the budget stage registers ``budget_plan``
here, and the limits stage (which runs first) takes the reservation together
with the rate limits in its ``gate.enter`` and settles it in its ``gate.leave``
(``JOINT`` / ``SETTLED`` on the context tell the budget stage it is done). With
no rate limit to check, or a store error, the budget stage does its own call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from aigw.accounting.ledger import Ledger
from aigw.accounting.pricing import PriceBook
from aigw.accounting.tokens import TokenCounter, answer_text, upper_estimate
from aigw.accounting.usage import Tokens, tokens_from_usage
from aigw.config.models import Deployment
from aigw.config.tenancy import TenancyConfig
from aigw.pipeline.context import ANSWER_BODY, RequestContext
from aigw.stores.base import BudgetCounter, Gate, Grant, Limits, RateLimiter, Reservation, Scope
from aigw.stores.failures import StoreSkipped, out_of_memory
from aigw.types import JSON

log = logging.getLogger("aigw.tenancy")
alert_log = logging.getLogger("aigw.budget")
SERVICE = "tenancy"
MEASURE = "tenancy.measure"
STREAM_TEXT = "tenancy.stream_text"  # StreamText of a streamed answer, for local counts
PLAN = "tenancy.budget_plan"  # (budget scopes, worst-case nano-dollars) of this request
JOINT = "tenancy.budget_joint"  # the reservation was taken with the rate limits: (scopes, amount, entered, slot)
# the joint step failed (it may have run): no second reservation; its lease, if it landed, is settled at the end
JOINT_FAILED = "tenancy.budget_joint_failed"  # (scopes, amount, entered, slot), as JOINT
REFUSED = "tenancy.budget_refused"  # the joint step found the budget exhausted: a Reservation
SETTLED = "tenancy.budget_settled"  # the joint step settled it: crossings (list)
# the joint step's settle was owed (skipped in a Redis outage, sent when it answers): its crossings, later
OWED = "tenancy.budget_owed"
ESTIMATE = "tenancy.prompt_estimate"
IMAGES = "tenancy.prompt_images"  # the prompt's image parts, each's ``detail: low`` (absent without images)
ROUTE_CAPS = "tenancy.route_caps"  # the deployment caps the router checks per call (``deployment_caps``)
BUDGET_DONE = "budget.reserved"  # the budget is reserved: (scopes, amount, entered, slot)
# leases taken during the call for more upstream calls (an output check's retry): [(scopes, amount, entered, slot)];
# the budget stage releases them at the end (the request's own lease is settled to the whole cost)
BUDGET_MORE = "budget.reserved_more"
# every upstream call of a request answered more than once (an output check's retry), in order:
# [(deployment, usage, service tier)]; each is priced at its own deployment (``measure``)
CALLS = "tenancy.calls"
# upstream calls that reached their upstream and ended without an answer or usage (``Served.cut``), with the
# body each was sent: [(deployment, body)]; each is billed its prompt, counted locally (``measure``)
CUT = "tenancy.cut_calls"
CUT_PROMPTS = "tenancy.cut_prompts"  # the prompt each CUT call is billed, in order: [(deployment, tokens)]
BudgetPlan = Callable[[RequestContext], tuple[list[Scope], int]]
# reserve one more upstream call of this body beside the request's: "" when reserved, else why not (for the error)
BudgetMore = Callable[[RequestContext, JSON], Awaitable[str]]
STORE_ERROR_LOG_EVERY = 1000  # during an outage every request fails its store call: log one in this many
STORE_ERROR_QUIET_S = 60.0  # a failure this long after the previous one starts a new outage: logged again


@dataclass(slots=True)
class TenancyServices:
    config: TenancyConfig
    limiter: RateLimiter
    budgets: BudgetCounter
    gate: Gate  # both of the above in one call each way
    prices: PriceBook
    tokens: TokenCounter
    ledger: Ledger | None = None
    alert: Any = None  # async (event: dict) -> None; set by app.py
    counters: dict[str, int] = field(default_factory=dict)  # store errors by kind (for /health and metrics)
    budget_plan: BudgetPlan | None = None  # set by the budget stage when it is in the pipeline
    budget_more: BudgetMore | None = None  # likewise: reserve a second upstream call (an output check's retry)
    # set by the cache stage: the embedding deployment a semantic lookup of the request may call, and how many
    # tries the router may make of it (None: no such call), reserved with the request (the budget stage)
    side_plan: Callable[[RequestContext], tuple[str, int] | None] | None = None
    metrics: Any = None  # Metrics, set by app.py: each budget alert counts in aigw_events_total
    monotonic: Callable[[], float] = time.monotonic  # when a store last failed (``store_error``), only then read
    spawn: Callable[[Coroutine[Any, Any, Any]], Any] | None = None  # the supervisor's, set by the composition
    # calls ended whose cost the counters may not have, as no lease held it: let through unreserved by a failed
    # budget store (``budget_on_store_error: open``), or reserved before the store lost its data (leases and all:
    # ``seed_generation`` moved meanwhile); the composition seeds the counters from the ledger again after them
    uncounted_ended: int = 0
    seed_generation: int = 0  # moved each time the counters are seeded because the store lost them
    _failed_at: dict[str, float] = field(default_factory=dict)

    def store_error(self, what: str, exc: BaseException, operation: str = "enter") -> None:
        """A limits or budget store call failed: counted in ``aigw_store_errors_total{store=what}``; logged
        on the first failure of an outage (none for ``STORE_ERROR_QUIET_S`` before it) and then once per
        ``STORE_ERROR_LOG_EVERY`` (an outage fails every request). The count runs on across outages, so a
        second short one would otherwise say nothing. A call not made because the store is in its skip
        window (``StoreSkipped``) counts with the operation ``<operation>_skipped``."""
        n = self.counters[what] = self.counters.get(what, 0) + 1
        if self.metrics is not None:
            self.metrics.store_error(what, f"{operation}_skipped" if isinstance(exc, StoreSkipped) else operation)
            if out_of_memory(exc):  # Redis full, not down: told apart, as the fix differs
                self.metrics.store_full(what)
        now = self.monotonic()
        last = self._failed_at.get(what)
        self._failed_at[what] = now
        if last is None or now - last >= STORE_ERROR_QUIET_S or n % STORE_ERROR_LOG_EVERY == 0:
            log.warning("%s store unavailable (%s: %s); %d failed calls so far", what, type(exc).__name__, exc, n)

    def alert_when_settled(self, later: asyncio.Future[list[tuple[str, str, float]]], scopes: list[Scope],
                           tenant_id: str, request_id: str) -> None:
        """A settle owed (``SettleOwed``: skipped in a Redis outage) or not answered (``SettleUnanswered``): the
        thresholds it crosses when it is sent, or that it is found to have crossed, alert then, with this
        request's tenant and id (nothing if it is given up, or without ``spawn``)."""
        def done(f: asyncio.Future[list[tuple[str, str, float]]]) -> None:
            if f.cancelled() or f.exception() is not None or self.spawn is None:
                return
            for ref, window, threshold in f.result():
                scope = next((s for s in scopes if s.ref == ref), None)
                if scope is not None:
                    self.spawn(self.raise_alert(scope, tenant_id, window, threshold, request_id))
        later.add_done_callback(done)

    async def raise_alert(self, scope: Scope, tenant_id: str, window: str, threshold: float, request_id: str) -> None:
        """One budget alert (settled spend crossed a threshold, or a budget was changed to below what its
        window has spent): a warning line, a count in ``aigw_events_total``, the webhook's event."""
        lim = scope.limits
        event: dict[str, Any] = {
            "type": "budget.threshold", "scope": scope.kind, "id": scope.id, "tenant_id": tenant_id,
            "threshold": threshold, "budget_usd": lim.budget_usd, "period": lim.budget_period, "window": window,
            "request_id": request_id,
            # the same alert always has the same id (a receiver drops a webhook's repeat by it)
            "event_id": "evt_" + hashlib.sha256(f"{scope.ref}|{window}|{scope.budget_nano}|{threshold!r}".encode())
            .hexdigest()[:24],
        }
        alert_log.warning("budget alert: %s %s of tenant %s reached %d%% of $%s (%s window %s, request %s)",
                          scope.kind, scope.id, tenant_id, round(threshold * 100), lim.budget_usd, lim.budget_period,
                          window, request_id)
        if self.metrics is not None:
            self.metrics.event("budget_alert")
        if self.alert is not None:
            try:
                await self.alert(event)
            except Exception:
                alert_log.exception("budget alert hook failed")


@dataclass(slots=True)
class Measured:
    """Built once per request (frozen dataclasses pay a ``object.__setattr__`` per field); read only."""

    tokens: Tokens
    cost_nano: int
    cost_saved_nano: int
    source: str  # "provider" | "local" | "none"


@dataclass(slots=True)
class StreamText:
    """What a stream carried, kept by the accounting stage for a local count when no usage comes."""

    content: list[str] = field(default_factory=list)  # text and tool-call arguments
    reasoning: list[str] = field(default_factory=list)  # thinking, billed as output (reasoning tokens)
    chunks: int = 0  # any at all: the upstream had started answering (and billing) when the stream ended
    start_usage: JSON | None = None  # the input split the stream's start told (Anthropic's message_start)


def grant_of(ctx: RequestContext) -> Grant | None:
    grant = ctx.principal.extra.get("grant")
    return grant if isinstance(grant, Grant) else None


def key_scopes(ctx: RequestContext, want: str) -> list[Scope]:
    """The caller's scopes with a ``want`` limit (precomputed once per key by the key cache).

    The list is shared by every request of the key: read it, never change it.
    """
    cached = ctx.principal.extra.get("scopes")
    if isinstance(cached, dict):
        return cached[want]  # type: ignore[no-any-return]
    grant = grant_of(ctx)
    return scopes_of(grant, want) if grant is not None else []


def scopes_of(grant: Grant, want: str) -> list[Scope]:
    """Key, project and tenant scopes that carry a ``want`` ("rate" or "budget") limit."""
    out = []
    for kind, ident, lim in (("key", grant.key.id, grant.key.limits), ("project", grant.project.id,
                             grant.project.limits), ("tenant", grant.tenant.id, grant.tenant.limits)):
        if _has(lim, want):
            out.append(Scope(kind, ident, lim))  # type: ignore[arg-type]
    return out


def _has(lim: Limits, want: str) -> bool:
    if want == "budget":
        return lim.budget_usd is not None
    return bool(lim.rpm or lim.tpm or lim.max_parallel)


def measure(ctx: RequestContext, svc: TenancyServices) -> Measured:
    """Tokens and cost of a finished request (memoised on the context)."""
    done = ctx.state.get(MEASURE)
    if isinstance(done, Measured):
        return done
    tokens, source = tokens_from_usage(ctx.usage), "provider"
    d = ctx.served_by
    if tokens is None:
        streamed = ctx.state.get(STREAM_TEXT)
        answered = ctx.state.get(ANSWER_BODY)
        # an upstream answered (and billed) when: the call succeeded, a stream had started (the router hands one
        # on, and names its deployment, once its first chunk came: passed on to the client or not), or a whole
        # answer came back that a later stage refused (an output guardrail's block): the client got an error,
        # but the upstream's bill stands
        upstream_started = d is not None and (ctx.error is None or ctx.stream or isinstance(answered, dict))
        if upstream_started and ctx.handled_by == "":
            if streamed is not None:
                text, thought = "".join(streamed.content), "".join(streamed.reasoning)
            else:
                text, thought = answer_text(answered) if isinstance(answered, dict) else ("", "")
            count = svc.tokens.count_text
            start = tokens_from_usage(streamed.start_usage) if streamed is not None else None
            if start is not None:  # its input as the upstream told it (cache reads and writes apart), output counted
                tokens = replace(start, output=count(text), reasoning=count(thought))
            else:
                prompt = svc.tokens.count_prompt(ctx.body, d.model if d is not None else "")  # images as d bills
                tokens = Tokens(fresh_input=prompt, output=count(text), reasoning=count(thought))
            source = "local"
        else:
            tokens, source = Tokens(), "none"
    calls = ctx.state.get(CALLS)
    if calls and not ctx.handled_by:  # answered more than once: each call at its own deployment's prices
        full = sum(_call_cost(ctx, svc, *call) for call in calls)
    else:
        full = _call_cost(ctx, svc, d, None, ctx.service_tier, tokens)
    if CUT in ctx.state and not ctx.handled_by:  # calls the upstream took that ended without usage: prompts
        full += _bill_cut(ctx, svc, tokens)
        source = "local"  # an estimate is in the row
    if ctx.handled_by:  # answered by the cache or a rule: no upstream bill, the saving is reported
        result = Measured(tokens, 0, full if ctx.handled_by == "cache" else 0, source)
    else:
        result = Measured(tokens, full, 0, source)
    ctx.state[MEASURE] = result
    return result


def add_cut(ctx: RequestContext, cut: list[Deployment] | None, body: JSON) -> None:
    """Note upstream calls of ``body`` that ended without an answer (``Served.cut``): each bills its prompt."""
    if cut:
        ctx.state.setdefault(CUT, []).extend((d, body) for d in cut)


def cut_prompts(ctx: RequestContext, svc: TenancyServices) -> list[tuple[Deployment, int]]:
    """The prompt tokens each ``CUT`` call is billed (counted locally, as its deployment counts images), once
    per request: the ledger, the budget and the deployments' tpm caps (the limits stage) see the same figures."""
    done = ctx.state.get(CUT_PROMPTS)
    if done is None:
        done = ctx.state[CUT_PROMPTS] = [(d, svc.tokens.count_prompt(body, d.model))
                                         for d, body in ctx.state.get(CUT) or ()]
    return done  # type: ignore[no-any-return]


def _bill_cut(ctx: RequestContext, svc: TenancyServices, tokens: Tokens) -> int:
    """Each cut call's prompt added to ``tokens``; their cost, each at its deployment."""
    cost = 0
    for d, n in cut_prompts(ctx, svc):
        tokens.fresh_input += n
        cost += _call_cost(ctx, svc, d, None, "", Tokens(fresh_input=n))
    return cost


def _call_cost(ctx: RequestContext, svc: TenancyServices, d: Deployment | None, usage: JSON | None, tier: str,
               tokens: Tokens | None = None) -> int:
    """One upstream call's cost at the deployment that served it (the model's price without one)."""
    if tokens is None:
        tokens = tokens_from_usage(usage) or Tokens()
    price = svc.prices.for_deployment(d.id, d.model) if d is not None else svc.prices.for_model(ctx.model)
    return price.cost_nano(tokens, tier=tier or _asked_tier(ctx)) if price is not None and tokens.total else 0


def _asked_tier(ctx: RequestContext) -> str | None:
    """The ``service_tier`` the client asked for: what is billed when the upstream does not say."""
    tier = ctx.body.get("service_tier")
    return tier if isinstance(tier, str) else None


def plan_budget(ctx: RequestContext, svc: TenancyServices) -> tuple[list[Scope], int]:
    """This request's budget scopes and worst case (memoised), or ([], 0) without a budget stage."""
    plan = ctx.state.get(PLAN)
    if plan is None:
        plan = svc.budget_plan(ctx) if svc.budget_plan is not None else ([], 0)
        ctx.state[PLAN] = plan
    return plan  # type: ignore[no-any-return]


def refused(ctx: RequestContext) -> Reservation | None:
    res = ctx.state.get(REFUSED)
    return res if isinstance(res, Reservation) else None


def prompt_estimate(ctx: RequestContext) -> int:
    """``upper_estimate`` of the prompt, once per request (limits and budget both need it); its image parts
    (each's ``detail: low``) go to ``IMAGES`` when there are some."""
    est = ctx.state.get(ESTIMATE)
    if est is None:
        images: list[bool] = []
        est = ctx.state[ESTIMATE] = upper_estimate(ctx.body, images)
        if images:
            ctx.state[IMAGES] = images
    return int(est)
