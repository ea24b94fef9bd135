"""Budgets: reserve the worst-case cost before the call, settle to the real cost after.

The worst case is the prompt (an estimate that errs high) plus ``max_tokens`` (or, without it,
the model's ``max_output_tokens``, else ``tenancy.default_max_tokens``; with ``reasoning_effort``, at least
the ``max_tokens`` an adapter that thinks sends), plus its per-request price and
the web searches it may run, at the dearest deployment of the model: at its long-context rates when the
estimate is over a deployment's threshold, and at its priority rates when the client asks for
``service_tier: priority`` (or ``fast``). It is
reserved against key, project and tenant in one atomic step, so concurrent calls
cannot together overrun a budget; the most any budget can be overrun by is one
call's difference between reservation and real cost (when the real cost is
larger than the estimate, e.g. a provider that ignores max_tokens).

An exhausted budget is refused before any upstream call with ``budget_exceeded``
(429 by default, matching OpenAI's own quota error, with ``x-should-retry: false``
so SDKs do not retry; 402 if configured). Alerts fire once per window at each
configured threshold (log line, event hook, optional webhook).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aigw import errors
from aigw.accounting.media import IMAGE_LOW, IMAGE_UPPER, image_upper
from aigw.accounting.pricing import Price
from aigw.accounting.tokens import upper_estimate
from aigw.guardrails.rules import RuleSet
from aigw.ids import unique_id
from aigw.pipeline.context import RequestContext, Result
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.side_calls import side_totals
from aigw.pipeline.stage import Stage
from aigw.pipeline.stages.budget_reach import fallback_targets, route_targets, rule_targets, with_fallbacks
from aigw.pipeline.stages.budget_worst import (
    DEARER_TIERS,
    NO_CAPS,
    Caps,
    Rates,
    answers,
    cache_write,
    count,
    fast_mode,
    joined,
    output_caps,
    output_tokens,
    thinking_tokens,
    web_searches,
    worst_rates,
)
from aigw.pipeline.stages.guardrail_policy import Policies, policies_for
from aigw.pipeline.tenancy import (
    BUDGET_DONE,
    BUDGET_MORE,
    IMAGES,
    JOINT,
    JOINT_FAILED,
    OWED,
    SERVICE,
    SETTLED,
    TenancyServices,
    key_scopes,
    measure,
    plan_budget,
    prompt_estimate,
    refused,
)
from aigw.providers.anthropic.thinking import thinks
from aigw.stores.base import NANO, Reservation, Scope, window_of
from aigw.stores.failures import SettleOwed, SettleUnanswered, StoreSkipped
from aigw.types import JSON, Clock

log = logging.getLogger("aigw.budget")
# why an output check's retry was not made (added to its format error)
NOT_AFFORDED = " (not asked again: the budget cannot cover a second call)"
NOT_CHECKED = " (not asked again: the budget cannot be checked right now)"
_STATE = BUDGET_DONE  # (scopes, reserved nano-dollars, when reserved, the lease's slot)
_UNRESERVED = "budget.unreserved"  # the store failed and the policy let the call go without a reservation
_GENERATION = "budget.seed_generation"  # the counters' seed generation when the call reserved
_NO_ROUTES: tuple[tuple[Price, ...], tuple[str, ...]] = ((), ())
_MEMO_EXTRA = 1024  # names beyond the configured models' whose worst rates are remembered


def usd(nano: int) -> str:
    """Dollars to four places, more where a small sum would read $0.0000 (two significant digits, to the
    nano-dollar): a $0.000001 budget refused a $0.00002 call as "$0.0000 of $0.0000 ... up to $0.0000"."""
    places = 4 if nano == 0 or nano >= 100_000 else min(9, 11 - len(str(nano)))
    text = f"{nano / NANO:.{places}f}"
    return text if places == 4 else text.rstrip("0")


class BudgetStage(Stage):
    name = "budget"

    def __init__(self, svc: TenancyServices, clock: Clock, prices_by_model: dict[str, list[Price]],
                 policies: Policies | None = None, image_bounds: dict[str, tuple[int, int]] | None = None,
                 caps: dict[str, Caps] | None = None, thinks: frozenset[str] = frozenset()) -> None:
        self.svc = svc
        # per model, the output caps of the deployments that may serve it (its own, routed and fallbacks')
        self._caps = caps or {}
        self._thinks = thinks  # the models a deployment that thinks may serve (its own, routed or fallbacks')
        # per model, the largest image bounds (low, other) of the upstreams it may be served by, where they are
        # above the common ones (gpt-4o-mini's tiles); models without such an upstream are absent
        self._image_bounds = image_bounds or {}
        self._policies = policies  # the guardrail policies, when some config names rules: a key may add its own
        self._routes_memo: dict[tuple[str, int], tuple[RuleSet, list[Price], list[str]]] = {}
        self.clock = clock
        self._rates = {model: worst_rates(prices) for model, prices in prices_by_model.items()}
        self._rates_cap = len(self._rates) + _MEMO_EXTRA  # model names come from clients: keep the memo bounded
        self._prices = prices_by_model
        # per model, the smallest prompt (long-context threshold) above which its standard worst case is not
        # the worst; models without a long-context rule are absent
        self._long = {model: min(p.long_above for p in prices if p.long_context is not None)
                      for model, prices in prices_by_model.items() if any(p.long_context for p in prices)}

    def worst_case_nano(self, ctx: RequestContext, body: JSON | None = None) -> int:
        """The most ``body`` (the request's own by default; a retry's) may cost at ``ctx.model``'s dearest
        deployment, or at a dearer model its configured or the key's own rules may route it to."""
        if body is None:
            body, prompt = ctx.body, prompt_estimate(ctx)
            images = ctx.state.get(IMAGES) if self._image_bounds else None  # ``prompt_images``, inline
        else:
            images = []
            prompt = upper_estimate(body, images if self._image_bounds else None)
        tier = body.get("service_tier")
        dearer = tier if tier in DEARER_TIERS else None  # flex may be served at standard rates: reserve those
        if dearer is None and fast_mode(body):
            dearer = "priority"
        # a prompt marked for Anthropic's cache may be written to it, at 1.25x input (5 min) or 2x (1 h): the
        # whole prompt at that rate (a byte estimate erring 1.1x high on code does not cover 2x)
        write = cache_write(body) if ctx.endpoint == "chat" else ""
        model = ctx.model
        routed, targets = self._key_routes(ctx)
        if images:  # an upstream may bill images above the common bound (gpt-4o-mini): at its bound
            prompt += self._image_tokens(images, [model, *targets])
        out = 0
        if ctx.endpoint != "embeddings":
            # both given: the larger, since an upstream may honour either (a compatible server whose quirk
            # keeps ``max_tokens`` drops ``max_completion_tokens``)
            asked = max(count(body.get("max_completion_tokens")), count(body.get("max_tokens")))
            caps = self._caps.get(model, NO_CAPS)
            for target in targets:  # a key's own rules may route to a model with another cap (rare)
                caps = joined(caps, self._caps.get(target, NO_CAPS))
            out = output_tokens(asked, caps, self.svc.config.default_max_tokens)
            if not asked and body.get("reasoning_effort") is not None and self._may_think(ctx, targets):
                # thinking raises max_tokens by its budget (high: 16,384 + 4,096): reserved at the default alone,
                # concurrent reasoning calls together overran a small budget
                out = max(out, thinking_tokens(body, caps, self.svc.config.default_max_tokens))
            out *= answers(ctx.endpoint, body)
        if routed:  # a key's own rules may route elsewhere (rare): worked out per request
            own = self._prices.get(model) or [self.svc.prices.for_model(model) or Price()]
            rates = worst_rates([p.rates_for(prompt, dearer) for p in [*own, *routed]], write)
        elif dearer is not None or write or (model in self._long and prompt > self._long[model]):
            rates = self._rates_for(model, prompt, dearer, write)
        else:
            known = self._rates.get(model)
            if known is None:
                known = worst_rates([self.svc.prices.for_model(model) or Price()])
                if len(self._rates) < self._rates_cap:
                    self._rates[model] = known
            rates = known
        fees = rates.per_request
        if rates.per_search and ctx.endpoint == "chat":  # searches the upstream may run and bill beside tokens
            fees += rates.per_search * web_searches(body)
        return round((prompt * rates.per_in + out * rates.per_out) * 1000 + fees * 1e9)

    def _may_think(self, ctx: RequestContext, targets: Sequence[str]) -> bool:
        """Whether a deployment that thinks may serve the chat call (or a model a key's rule routes it to)."""
        thinking = self._thinks
        return ctx.endpoint == "chat" and (ctx.model in thinking or any(t in thinking for t in targets))

    def _rates_for(self, model: str, prompt: int, tier: str | None, write: str = "") -> Rates:
        """The worst rates of a long prompt, a dearer tier or a cache write (the rare case: worked out per
        request)."""
        prices = self._prices.get(model) or [self.svc.prices.for_model(model) or Price()]
        return worst_rates([p.rates_for(prompt, tier) for p in prices], write)

    def _image_tokens(self, images: Sequence[bool], models: list[str]) -> int:
        """What ``images`` (each's ``detail: low``) add to the prompt estimate's common bounds when ``models``
        may serve them: the largest bound of their upstreams."""
        bounds = [self._image_bounds[m] for m in models if m in self._image_bounds]
        if not bounds:
            return 0
        low, other = max(b[0] for b in bounds) - IMAGE_LOW, max(b[1] for b in bounds) - IMAGE_UPPER
        return sum(low if is_low else other for is_low in images)

    def _key_routes(self, ctx: RequestContext) -> tuple[Sequence[Price], Sequence[str]]:
        """The prices and names of the models that rules from the caller's metadata (key, project, tenant)
        may route this request to, beyond the configured ones (empty without such rules)."""
        policies = self._policies
        if policies is None or ctx.endpoint != "chat":
            return _NO_ROUTES
        rules = policies.for_request(ctx).rules  # memoised on the request: the rules stage reads the same
        if rules is None or rules is policies.by_model.get(ctx.model, policies.default).rules:
            return _NO_ROUTES
        memo = (ctx.model, id(rules))
        found = self._routes_memo.get(memo)
        if found is None or found[0] is not rules:
            targets = sorted(route_targets(rules, ctx.model))  # each target's prices hold its own fallbacks' too
            found = (rules, [p for t in targets for p in self._prices.get(t, ())], targets)
            if len(self._routes_memo) >= _MEMO_EXTRA:
                self._routes_memo.clear()
            self._routes_memo[memo] = found
        return found[1], found[2]

    def plan(self, ctx: RequestContext) -> tuple[list[Scope], int]:
        scopes = key_scopes(ctx, "budget")
        if not scopes:
            return [], 0
        side = self.svc.side_plan(ctx) if self.svc.side_plan is not None else None  # the cache's embedding
        return scopes, self.worst_case_nano(ctx) + (self._side_nano(ctx, *side) if side is not None else 0)

    def _side_nano(self, ctx: RequestContext, model: str, tries: int) -> int:
        """The most an embedding of (at most) the prompt at ``model`` costs over ``tries`` tries: a try cut short
        after its upstream took it is billed its prompt too."""
        rates = self._rates.get(model) or worst_rates(self._prices.get(model) or [Price()])
        return tries * round(prompt_estimate(ctx) * rates.per_in * 1000 + rates.per_request * 1e9)

    async def on_request(self, ctx: RequestContext) -> Result | None:
        scopes, amount = plan_budget(ctx, self.svc)
        if not scopes:
            return None
        ctx.state[_GENERATION] = self.svc.seed_generation
        if (res := refused(ctx)) is not None:  # found by the limits stage's joint step
            raise self._refusal(ctx, scopes, res, amount)
        if JOINT in ctx.state:
            ctx.state[_STATE] = ctx.state[JOINT]
            return None
        if (lost := ctx.state.get(JOINT_FAILED)) is not None:  # it may have reserved: never reserve twice
            ctx.state[_STATE] = lost  # the limits stage settles its lease, if it landed, at the end
            self._store_down(ctx)
            return None
        entered = self.clock.now()
        slot = unique_id("slot_")  # the lease's id: unique per call, like the limits stage's
        try:
            _, res = await self.svc.gate.enter([], slot, 0, scopes, amount, entered)
        except asyncio.CancelledError:  # the client left with the step on its way: settle its lease at the end
            ctx.state[_STATE] = (scopes, amount, entered, slot)
            raise
        except Exception as exc:
            # It may have run all the same (a reply after the timeout): settle its lease at the end, which
            # changes nothing if it did not land; never reserve again.
            self.svc.store_error("budget", exc)
            if not isinstance(exc, StoreSkipped):  # a skipped step was not sent: nothing to settle
                ctx.state[_STATE] = (scopes, amount, entered, slot)
            self._store_down(ctx)
            return None
        if res is not None and not res.allowed:
            raise self._refusal(ctx, scopes, res, amount)
        ctx.state[_STATE] = (scopes, amount, entered, slot)
        return None

    def _store_down(self, ctx: RequestContext) -> None:
        """The budget store failed: refuse (``closed``) or let the call go unreserved (``open``)."""
        if self.svc.config.budget_on_store_error == "closed":
            raise errors.Unavailable("Budgets cannot be checked right now; try again shortly.", retry_after=1.0,
                                     code="store_unavailable")
        ctx.state[_UNRESERVED] = True

    def _refusal(self, ctx: RequestContext, scopes: list[Scope], res: Reservation, amount: int) -> errors.GatewayError:
        scope = next(s for s in scopes if s.ref == res.scope)
        period = scope.limits.budget_period
        left = max(0, res.limit_nano - res.spent_nano)
        fit = "send fewer or shorter inputs to fit" if ctx.endpoint == "embeddings" else "lower max_tokens to fit"
        msg = (f"Budget exceeded for {scope.kind}: ${usd(res.spent_nano)} of ${usd(res.limit_nano)} "
               f"used in the {period} window ({window_of(period, self.clock.now())}); ${usd(left)} left, and this "
               f"request may cost up to ${usd(amount)} ({fit}).")
        return errors.BudgetExceeded(msg, code="budget_exceeded", status=self.svc.config.budget_status)

    async def reserve_more(self, ctx: RequestContext, body: JSON) -> str:
        """Reserve one more upstream call of ``body`` (an output check's retry) beside the request's own
        lease, as a lease of its own: "" when it is reserved (or no budget applies, or the store failed and
        the policy is ``open``), else why not: ``NOT_AFFORDED`` (a budget cannot cover it) or
        ``NOT_CHECKED`` (the store failed, policy ``closed``). The request's lease is settled to the cost of
        every call; this one is released at the end."""
        scopes, _ = plan_budget(ctx, self.svc)
        if not scopes:
            return ""
        amount = self.worst_case_nano(ctx, body)
        entered = self.clock.now()
        slot = unique_id("slot_")
        taken = (scopes, amount, entered, slot)
        try:
            _, res = await self.svc.gate.enter([], slot, 0, scopes, amount, entered)
        except asyncio.CancelledError:
            ctx.state.setdefault(BUDGET_MORE, []).append(taken)
            raise
        except Exception as exc:  # as on_request: it may have landed (release it at the end), never again
            self.svc.store_error("budget", exc)
            if not isinstance(exc, StoreSkipped):
                ctx.state.setdefault(BUDGET_MORE, []).append(taken)
            return "" if self.svc.config.budget_on_store_error == "open" else NOT_CHECKED
        if res is not None and not res.allowed:
            return NOT_AFFORDED
        ctx.state.setdefault(BUDGET_MORE, []).append(taken)
        return ""

    async def on_finish(self, ctx: RequestContext) -> None:
        if ctx.state.get(_UNRESERVED) or ctx.state.get(_GENERATION, self.svc.seed_generation) \
                != self.svc.seed_generation:  # no lease holds its cost (any more): the counters take it from the ledger
            self.svc.uncounted_ended += 1
        try:
            crossed = await self._settle(ctx)
        finally:  # after the settle that counts their cost: released first, concurrent calls could reserve
            if BUDGET_MORE in ctx.state:  # the room that cost takes, and together overrun the budget
                await self._release_more(ctx)
        for scopes, ref, window, threshold in crossed:
            await self._alert(ctx, scopes, ref, window, threshold)

    async def _release_more(self, ctx: RequestContext) -> None:
        for scopes, amount, entered, slot in ctx.state.pop(BUDGET_MORE, ()):  # a retry's: its cost is in the
            try:  # request's own lease (settled in ``_settle``, or by the limits stage), so it settles to nothing
                await self.svc.gate.leave([], slot, 0, 0, scopes, amount, 0, entered, [])
            except Exception as exc:  # it expires with its lease
                self.svc.store_error("budget", exc, "leave")

    async def _settle(self, ctx: RequestContext) -> list[tuple[list[Scope], str, str, float]]:
        """Settle the request's lease (unless the limits stage did); the thresholds it crossed, to alert."""
        taken = ctx.state.get(_STATE)
        if taken is None:
            return []
        scopes, reserved, entered, slot = taken
        crossed = ctx.state.get(SETTLED)
        owed = ctx.state.get(OWED)
        if crossed is None:  # not settled with the rate limits: settle here
            actual = measure(ctx, self.svc).cost_nano + side_totals(ctx, self.svc)[1]  # and the cache's embedding
            try:  # in the window the reservation was made in, not the one the call ends in
                crossed = await self.svc.gate.leave([], slot, 0, 0, scopes, reserved, actual, entered,
                                                    self.svc.config.alert_thresholds)
            except Exception as exc:
                self.svc.store_error("budget", exc, "leave")
                if isinstance(exc, (SettleOwed, SettleUnanswered)):  # its crossings are known later
                    owed = exc.later
                crossed = []
            ctx.state[SETTLED] = crossed
        if owed is not None:  # sent (or read back) when the store answers again: its crossings alert then
            self.svc.alert_when_settled(owed, scopes, ctx.principal.tenant_id, ctx.request_id)
        return [(scopes, ref, window, threshold) for ref, window, threshold in crossed]

    async def _alert(self, ctx: RequestContext, scopes: list[Scope], ref: str, window: str, threshold: float) -> None:
        scope = next(s for s in scopes if s.ref == ref)
        await self.svc.raise_alert(scope, ctx.principal.tenant_id, window, threshold, ctx.request_id)


def build(deps: StageDeps) -> Stage | None:
    svc = deps.services.get(SERVICE)
    if not isinstance(svc, TenancyServices):
        return None
    prices: dict[str, list[Price]] = {}
    bounds: dict[str, list[tuple[int, int]]] = {}
    caps: dict[str, list[int | None]] = {}
    thinking = {d.name for d in deps.config.models if thinks(d.provider, d.model)}
    for d in deps.config.models:
        prices.setdefault(d.name, []).append(svc.prices.for_deployment(d.id, d.model))
        caps.setdefault(d.name, []).append(d.max_output_tokens)
        bounds.setdefault(d.name, []).append(image_upper(d.model or d.name))
    # a configured rule may route a model's request to another model after the reservation, and a fallback
    # chain may end at another: reserve at the dearest of them all (a key's own rules, in its metadata, are
    # added per request: ``_key_routes``)
    reach = {model: fallback_targets(deps, model) for model in prices}
    targets = {model: {t for t in with_fallbacks(rule_targets(deps, model), reach, deps) | reach[model]
                       if t != model} for model in prices}
    routed = {model: [p for target in targets[model] for p in prices.get(target, ())] for model in prices}
    prices = {model: [*own, *routed[model]] for model, own in prices.items()}
    # and each image at the largest bound of those models' upstreams (gpt-4o-mini's tiles are ~33x gpt-4o's)
    reached = {model: [*own, *(b for t in targets[model] for b in bounds.get(t, ()))] for model, own in bounds.items()}
    images = {model: (max(b[0] for b in found), max(b[1] for b in found)) for model, found in reached.items()
              if any(b != (IMAGE_LOW, IMAGE_UPPER) for b in found)}
    # and a request without max_tokens at the largest output cap of those models' deployments
    out = {model: output_caps([*own, *(c for t in targets[model] for c in caps.get(t, ()))])
           for model, own in caps.items()}
    # and a request with reasoning_effort at the max_tokens of a deployment that thinks, where one may serve it
    thinking_models = frozenset(m for m in prices if m in thinking or not thinking.isdisjoint(targets[m]))
    stage = BudgetStage(svc, deps.clock, prices, policies_for(deps, "rules"), images, out, thinking_models)
    svc.budget_plan = stage.plan  # lets the limits stage reserve in the same store call
    svc.budget_more = stage.reserve_more  # lets the output stage reserve its retry
    return stage
