"""Rate limits: requests per minute, tokens per minute and parallel requests.

Checked before the call against every level that has a cap (key, project,
tenant), all at once: in process memory, or in one Redis Lua call shared by
every replica. A deployment's own caps are checked by the router as it picks one
(``pipeline.deployment_caps``), and settled here with the rest. A refusal is
a 429 in the client's wire format with ``Retry-After`` and ``x-ratelimit-*``
headers; an accepted call gets the same headers with what remains. After the
call the token estimate is settled to the real count and the parallel slot freed.
When the budget stage is on, its reservation and settlement ride along in the
same store call (one Redis round trip before the call, one after).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from aigw import errors
from aigw.accounting.usage import Tokens, tokens_from_usage
from aigw.durations import go_duration
from aigw.ids import unique_id
from aigw.pipeline.context import RequestContext, Result
from aigw.pipeline.deployment_caps import DeploymentCaps, capped_deployments
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.rate_headers import add_headers
from aigw.pipeline.side_calls import side_totals
from aigw.pipeline.stage import Stage
from aigw.pipeline.tenancy import (
    BUDGET_DONE,
    CALLS,
    CUT,
    JOINT,
    JOINT_FAILED,
    OWED,
    REFUSED,
    ROUTE_CAPS,
    SERVICE,
    SETTLED,
    TenancyServices,
    cut_prompts,
    key_scopes,
    measure,
    plan_budget,
    prompt_estimate,
)
from aigw.stores.base import Admission, Limits, Scope
from aigw.stores.failures import SettleOwed, SettleUnanswered, StoreSkipped
from aigw.types import Clock

_STATE = "limits.taken"


class LimitsStage(Stage):
    name = "limits"

    def __init__(self, svc: TenancyServices, clock: Clock, capped: dict[str, list[Scope]] | None = None) -> None:
        self.svc = svc
        self.clock = clock
        # deployment id -> [its scope] for every deployment with a cap of its own (a list made once: stores may
        # cache by the list), checked by the router as it picks one (``deployment_caps``)
        self._capped = capped or {}
        self._capped_tpm = any(lst[0].limits.tpm for lst in self._capped.values())
        # id of a key's scope list -> (that list, the scope with the smallest tpm cap)
        self._tightest: dict[int, tuple[list[Scope], Scope | None]] = {}

    def _scopes(self, ctx: RequestContext) -> tuple[list[Scope], Scope | None]:
        """The request's rate scopes and the one with the smallest tpm cap (None: no tpm cap), worked out
        once per key.

        The lists are shared by the key's requests (so a store may cache by them): never changed.
        """
        scopes = key_scopes(ctx, "rate")
        known = self._tightest.get(id(scopes))
        if known is None or known[0] is not scopes:  # the entry holds the key's list: its id is not reused
            tightest = min((s for s in scopes if s.limits.tpm), key=lambda s: s.limits.tpm or 0, default=None)
            known = (scopes, tightest)
            if len(self._tightest) >= 10_000:  # lists of keys the key cache has dropped
                self._tightest.clear()
            self._tightest[id(scopes)] = known
        return known

    async def _counted(self, ctx: RequestContext, scopes: list[Scope], tightest: Scope, cap: int) -> int:
        """The prompt counted with the tokenizer, for when the cheap estimate (which errs high, up to
        2.5x) alone is over the smallest tpm cap. Without it a prompt that fits would be refused for
        good, each refusal saying to retry in a minute; a prompt the tokenizer also finds over the cap
        is refused as too large, and SDKs are told not to retry it (``TooLargeForLimit`` is not retryable:
        ``x-should-retry: false``, no ``Retry-After``)."""
        # off the event loop: the first count loads the encoding (~0.1 s), a big prompt takes milliseconds
        counted = await asyncio.to_thread(self.svc.tokens.count_prompt, ctx.body)
        if counted > cap:
            await self._too_large_headers(ctx, scopes, tightest)
            too_large = errors.TooLargeForLimit(
                f"Request too large for {tightest.kind} on tokens per minute: limit {cap}, this prompt is "
                f"about {counted} tokens. Shorten the prompt to run it.", code="rate_limit_exceeded")
            too_large.ran_out = "tokens"
            raise too_large
        return counted

    async def _too_large_headers(self, ctx: RequestContext, scopes: list[Scope], tightest: Scope) -> None:
        """The x-ratelimit-* figures of a prompt too large for ``tightest``'s tpm: its tokens as they stand
        (what it has left, when its oldest count leaves the window: a client-side limiter reading them must not
        hold back the calls that fit), the requests of the level with the fewest left. One read of the store,
        nothing taken; if it fails, the limit alone."""
        out = ctx.response_headers
        out["x-ratelimit-limit-tokens"] = str(tightest.limits.tpm)
        try:
            levels = await self.svc.gate.peek(scopes)
        except Exception as exc:
            self.svc.store_error("limits", exc, "peek")
            return
        tokens = levels[next(i for i, s in enumerate(scopes) if s is tightest)]
        requests = min((a for a in levels if a.limit_requests), key=lambda a: a.remaining_requests or 0,
                       default=None)
        if requests is not None:
            tokens = replace(tokens, limit_requests=requests.limit_requests,
                             remaining_requests=requests.remaining_requests, reset_requests_s=requests.reset_requests_s)
        add_headers(out, tokens)

    async def on_request(self, ctx: RequestContext) -> Result | None:
        scopes, tightest = self._scopes(ctx)
        if not scopes:
            if self._capped:
                self._route_caps(ctx, unique_id("slot_"), 0)
            return None  # a budget alone is reserved by the budget stage
        tpm = tightest is not None
        est = 0
        counted: int | None = None  # the prompt counted with the tokenizer, when the estimate was over a cap
        if tightest is not None and (est := prompt_estimate(ctx)) > (cap := tightest.limits.tpm or 0):
            est = counted = await self._counted(ctx, scopes, tightest, cap)
        budget, amount = plan_budget(ctx, self.svc) if BUDGET_DONE not in ctx.state else ([], 0)
        slot = unique_id("slot_")  # the client's x-request-id, repeated on parallel calls, would share one
        entered = self.clock.now()
        while True:
            try:
                answer, reservation = await self.svc.gate.enter(scopes, slot, est, budget, amount, entered)
            except BaseException as exc:
                self._step_failed(ctx, exc, scopes, slot, est, budget, amount, entered, counted)  # raises if it must
                return None  # the store failed and the limits fail open
            if answer.allowed or answer.reason != "tpm" or counted is not None:
                break
            # The estimate errs high (up to 2.5x): refused on tokens, the prompt is counted with the tokenizer and
            # asked once more (nothing was taken), so one that fits what is left runs now. Only a refusal pays for it.
            counted = await asyncio.to_thread(self.svc.tokens.count_prompt, ctx.body)
            if counted >= est:
                break
            est = counted
        if reservation is not None and not reservation.allowed:
            answer = _given_back(answer, est)
        add_headers(ctx.response_headers, answer)
        if not answer.allowed:
            # the wait itself, not at least a second: retry-after-ms carries it to the SDKs (``retry_headers``)
            refused = errors.RateLimited(_refusal_message(answer, scopes, est), code="rate_limit_exceeded",
                                         retry_after=answer.retry_after_s)
            refused.ran_out = "tokens" if answer.reason == "tpm" else "requests"  # OpenAI's error type
            raise refused
        ctx.state[_STATE] = (scopes, slot, est, tpm, answer.taken_at, entered)
        if reservation is not None:
            ctx.state[REFUSED if not reservation.allowed else JOINT] = reservation if not reservation.allowed \
                else (budget, amount, entered, slot)
        if self._capped:
            self._route_caps(ctx, slot, est, counted)
        return None

    def _step_failed(self, ctx: RequestContext, exc: BaseException, scopes: list[Scope], slot: str, est: int,
                     budget: list[Scope], amount: int, entered: float, counted: int | None) -> None:
        """The gate's step before the call raised: what it may hold is noted for ``on_finish``; the exception goes
        on when the client left (cancelled) or the limits fail closed, else the call runs unlimited (fail open)."""
        if not isinstance(exc, Exception):
            # The client left while the step was on its way (in Redis it ran, its reply had not come): free
            # the slot and settle the lease at the end, or they stay taken until they expire.
            ctx.state[_STATE] = (scopes, slot, 0, False, 0, entered)
            if budget:
                ctx.state[JOINT_FAILED] = (budget, amount, entered, slot)
            raise exc
        # The step may have run all the same (a Redis reply that timed out): never repeat it. Free the
        # slot and settle the lease it may hold when the call ends (a lease that did not land is not
        # settled), and let the budget stage apply its policy without a second reservation.
        self.svc.store_error("limits", exc)
        if isinstance(exc, StoreSkipped):  # not sent: nothing to free or settle, no call at the end
            if budget:
                ctx.state[JOINT_FAILED], ctx.state[SETTLED] = (budget, amount, entered, slot), []
        else:
            ctx.state[_STATE] = (scopes, slot, 0, False, 0, entered)
            if budget:
                ctx.state[JOINT_FAILED] = (budget, amount, entered, slot)
        if self.svc.config.limits_on_store_error == "closed":
            raise errors.Unavailable("Rate limits cannot be checked right now; try again shortly.",
                                     retry_after=1.0, code="store_unavailable") from None
        if self._capped:
            self._route_caps(ctx, slot, est, counted)

    def _route_caps(self, ctx: RequestContext, slot: str, est: int, counted: int | None = None) -> None:
        """Hand the router the deployments' caps, to check as it picks one (so an answer from the cache, or
        a call refused before the router, takes nothing from them); a prompt counted here is not counted
        again there."""
        if not est and self._capped_tpm:
            est = prompt_estimate(ctx)
        ctx.state[ROUTE_CAPS] = DeploymentCaps(self.svc, self._capped, slot, est, ctx.body, self.clock.now,
                                               counted=counted)

    async def on_finish(self, ctx: RequestContext) -> None:
        taken = ctx.state.get(_STATE)
        caps: DeploymentCaps | None = ctx.state.get(ROUTE_CAPS)
        if taken is None and (caps is None or not caps.taken):
            return
        steps = []  # the store steps leave in one loop turn: one Redis call
        joint = None
        if taken is not None:
            scopes, slot, est, tpm, taken_at, entered = taken
            # tokens per minute count what upstreams processed: an answer from the cache (or a rule) used none,
            # so its estimate goes back whole (its request still counted against rpm and max_parallel)
            # (the calls a stage made for it, the cache's embedding, are charged either way: ``side_calls``)
            side_tokens, side_cost = side_totals(ctx, self.svc)
            used = (0 if ctx.handled_by or not tpm else measure(ctx, self.svc).tokens.total) + side_tokens
            joint = (ctx.state.get(JOINT) or ctx.state.get(JOINT_FAILED)) if SETTLED not in ctx.state else None
            budget, reserved, _, _ = joint if joint is not None else ([], 0, 0.0, "")
            actual = measure(ctx, self.svc).cost_nano + side_cost if joint is not None else 0
            # refused before any upstream call, because every deployment was full (or the prompt is too large for
            # all of them), a budget is spent, or as bad input (a cache control, a model that does not exist): the
            # request goes back too, so a key refused by its own budget takes no rpm from its project or tenant,
            # and bad input changes nothing; every deployment full after a call was made (the fallback's, say)
            # keeps it: it reached an upstream
            back = (isinstance(ctx.error, _GIVEN_BACK) and not ctx.attempts) or _refused_input(ctx)
            steps.append(self.svc.gate.leave(scopes, slot, used - est if tpm else 0, taken_at, budget, reserved,
                                             actual, entered, self.svc.config.alert_thresholds, back))
        if caps is not None and caps.taken:
            steps += self._settle_caps(ctx, caps)
        if not steps:  # rpm-only caps (or an estimate that was exact) and no key scopes: nothing to settle
            return
        failed: BaseException | None = None
        if len(steps) > 1:
            outcomes = await asyncio.gather(*steps, return_exceptions=True)
            failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
        else:  # the common case: one step, no gather
            try:
                outcomes = [await steps[0]]
            except Exception as exc:
                outcomes, failed = [exc], exc
        if failed is not None:
            if not isinstance(failed, Exception):
                raise failed
            self.svc.store_error("limits", failed, "leave")  # parallel slots expire on their own (TTL)
        if joint is not None:
            first = outcomes[0]  # the request's own leave (the caps' follow it)
            # failed, it may have been settled all the same: never settle twice; owed, it is sent later
            ctx.state[SETTLED] = first if isinstance(first, list) else []
            if isinstance(first, (SettleOwed, SettleUnanswered)):  # its crossings alert when known
                ctx.state[OWED] = first.later

    def _settle_caps(self, ctx: RequestContext, caps: DeploymentCaps) -> list[Any]:
        """The router's per-call takes: a call that answered settles to its tokens, one cut short after its
        upstream took it (``CUT``) to the prompt it is billed, any other failed one gives its estimate back
        (its request stays counted: it reached the upstream)."""
        cut: dict[str, list[int]] = {}  # deployment id -> the billed prompts of its cut calls, in order
        cut_total = 0
        if CUT in ctx.state and not ctx.handled_by:
            for d, n in cut_prompts(ctx, self.svc):
                cut.setdefault(d.id, []).append(n)
                cut_total += n
        answered = self._answered(ctx, cut_total)
        last = {t.scopes[0].id: i for i, t in enumerate(caps.taken)}  # a deployment's last take answered, if any
        steps = []
        now = self.clock.now()
        for i, t in enumerate(caps.taken):
            if not t.scopes[0].limits.tpm:
                continue
            used = 0
            dep = t.scopes[0].id
            if dep in answered and last[dep] == i:  # the tokens of the calls it answered
                used = answered[dep]
            elif prompts := cut.get(dep):  # a deployment's sum is exact, whichever take gets each
                used = prompts.pop(0)
            if used != t.est:
                steps.append(self.svc.gate.leave(t.scopes, caps.slot, used - t.est, t.taken_at, [], 0, 0, now, []))
        return steps

    def _answered(self, ctx: RequestContext, cut_total: int) -> dict[str, int]:
        """Deployment id -> the tokens of the calls it answered: the one that served the request, or each call
        of an output retry (``CALLS``: an answer that broke its schema, asked again, maybe elsewhere)."""
        if ctx.handled_by or ctx.served_by is None:
            return {}
        calls = ctx.state.get(CALLS)
        if not calls:  # the request's tokens but those of its cut calls
            return {ctx.served_by.id: measure(ctx, self.svc).tokens.total - cut_total}
        out: dict[str, int] = {}
        for d, usage, _ in calls:
            if d is not None:
                out[d.id] = out.get(d.id, 0) + (tokens_from_usage(usage) or Tokens()).total
        return out


def _given_back(a: Admission, est: int) -> Admission:
    """The figures of a call the limits took and its budget refuses: ``on_finish`` gives its request and its
    estimate back, so its 429 says what is left without it (a client-side limiter reading them must not hold
    back a call more), and a window it alone was in is empty: nothing to wait for."""
    out = replace(a)
    if a.limit_requests is not None:
        out.remaining_requests = min(a.limit_requests, (a.remaining_requests or 0) + 1)
        if out.remaining_requests == a.limit_requests:
            out.reset_requests_s = 0.0
    if a.limit_tokens is not None:
        out.remaining_tokens = min(a.limit_tokens, (a.remaining_tokens or 0) + est)
        if out.remaining_tokens == a.limit_tokens:
            out.reset_tokens_s = 0.0
    return out


def _refusal_message(answer: Admission, scopes: list[Scope], est: int) -> str:
    """OpenAI's words for a rate-limit refusal ("Rate limit reached for gpt-4o in organization org-x on tokens per
    min (TPM): Limit 30000, Used 18928, Requested 11159. Please try again in 174ms."), which clients read the wait
    out of (``try again in 1.574s``), with the refusing level for the model and organization."""
    scope = next((s for s in scopes if s.ref == answer.scope), None)
    lim = scope.limits if scope is not None else Limits()
    kind = scope.kind if scope is not None else answer.scope.split(":")[0]
    measure, limit, asked = {"rpm": ("requests per min (RPM)", lim.rpm, 1),
                             "tpm": ("tokens per min (TPM)", lim.tpm, est),
                             "parallel": ("parallel requests", lim.max_parallel, 1)}[answer.reason]
    return (f"Rate limit reached for {kind} on {measure}: Limit {limit}, Requested {asked}. "
            f"Please try again in {go_duration(answer.retry_after_s)}.")


_BAD_INPUT = frozenset({"bad_request", "not_found"})
# refusals of the gateway's own that give the request back when no upstream was called (``on_finish``): the
# router's "too large for the deployments" is a ``TooLargeForLimit`` (the key's own is raised before any take);
# ``Unavailable`` with no attempt is every breaker open (or the gateway shutting down): a client retrying against a
# model whose upstreams are down must not use up its own rpm on 503s
_GIVEN_BACK = (errors.DeploymentsFull, errors.BudgetExceeded, errors.TooLargeForLimit, errors.Unavailable)


def _refused_input(ctx: RequestContext) -> bool:
    """Refused for what it asked, by a stage after this one or the router, before any upstream call: bad input
    changes nothing, so it takes no request from rpm (a 400 an upstream answered did reach it, and counts)."""
    return ctx.error is not None and ctx.error.kind in _BAD_INPUT and ctx.attempts == 0


def build(deps: StageDeps) -> Stage | None:
    svc = deps.services.get(SERVICE)
    if not isinstance(svc, TenancyServices):
        return None
    return LimitsStage(svc, deps.clock, capped_deployments(deps.config.models))
