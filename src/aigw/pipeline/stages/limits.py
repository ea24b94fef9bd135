"""Rate limits: requests per minute, tokens per minute and parallel requests.

Checked before the call against every level that has a cap (key, project,
tenant, and the deployment when the model has exactly one), all at once: in
process memory, or in one Redis Lua call shared by every replica. A refusal is
a 429 in the client's wire format with ``Retry-After`` and ``x-ratelimit-*``
headers; an accepted call gets the same headers with what remains. After the
call the token estimate is settled to the real count and the parallel slot freed.
When the budget stage is on, its reservation and settlement ride along in the
same store call (one Redis round trip before the call, one after).
"""

from __future__ import annotations

import asyncio
import math

from aigw import errors
from aigw.ids import unique_id
from aigw.pipeline.context import RequestContext, Result
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.stage import Stage
from aigw.pipeline.tenancy import (
    BUDGET_DONE,
    JOINT,
    JOINT_FAILED,
    REFUSED,
    SERVICE,
    SETTLED,
    TenancyServices,
    key_scopes,
    measure,
    plan_budget,
    prompt_estimate,
)
from aigw.stores.base import Admission, Limits, Scope
from aigw.types import Clock

_STATE = "limits.taken"


class LimitsStage(Stage):
    name = "limits"

    def __init__(self, svc: TenancyServices, deployment_scopes: dict[str, Scope], clock: Clock) -> None:
        self.svc = svc
        self.clock = clock
        self._deployment_scopes = deployment_scopes  # public model -> its single deployment's caps
        # deployment id -> that scope alone (a list made once: stores may cache by the list)
        self._deployment_lists = {s.id: [s] for s in deployment_scopes.values()}
        # (id of a key's scope list, model) -> (that list, the request's scopes, the one with the smallest tpm cap)
        self._plans: dict[tuple[int, str], tuple[list[Scope], list[Scope], Scope | None]] = {}

    def _scopes(self, ctx: RequestContext) -> tuple[list[Scope], Scope | None]:
        """The request's rate scopes and the one with the smallest tpm cap (None: no tpm cap), worked
        out once per key and model.

        The lists are shared by the key's requests (so a store may cache by them): never changed.
        """
        keyed = key_scopes(ctx, "rate")
        plan = self._plans.get((id(keyed), ctx.model))
        if plan is None or plan[0] is not keyed:  # the entry holds the key's list: its id is not reused
            dep = self._deployment_scopes.get(ctx.model)
            scopes = [*keyed, dep] if dep is not None else keyed
            tightest = min((s for s in scopes if s.limits.tpm), key=lambda s: s.limits.tpm or 0, default=None)
            plan = (keyed, scopes, tightest)
            if len(self._plans) >= 10_000:  # lists of keys the key cache has dropped
                self._plans.clear()
            self._plans[(id(keyed), ctx.model)] = plan
        return plan[1], plan[2]

    async def _counted(self, ctx: RequestContext, tightest: Scope, cap: int) -> int:
        """The prompt counted with the tokenizer, for when the cheap estimate (which errs high, up to
        2.5x) alone is over the smallest tpm cap. Without it a prompt that fits would be refused for
        good, each refusal saying to retry in a minute; a prompt the tokenizer also finds over the cap
        is refused as too large, and SDKs are told not to retry it."""
        # off the event loop: the first count loads the encoding (~0.1 s), a big prompt takes milliseconds
        counted = await asyncio.to_thread(self.svc.tokens.count_prompt, ctx.body)
        if counted > cap:
            ctx.response_headers["x-ratelimit-limit-tokens"] = str(cap)
            raise errors.TooLargeForLimit(
                f"Request too large for {tightest.kind} on tokens per minute: limit {cap}, this prompt is "
                f"about {counted} tokens. Shorten the prompt to run it.", code="rate_limit_exceeded")
        return counted

    async def on_request(self, ctx: RequestContext) -> Result | None:
        scopes, tightest = self._scopes(ctx)
        if not scopes:
            return None  # a budget alone is reserved by the budget stage
        tpm = tightest is not None
        est = 0
        if tightest is not None and (est := prompt_estimate(ctx)) > (cap := tightest.limits.tpm or 0):
            est = await self._counted(ctx, tightest, cap)
        budget, amount = plan_budget(ctx, self.svc) if BUDGET_DONE not in ctx.state else ([], 0)
        slot = unique_id("slot_")  # the client's x-request-id, repeated on parallel calls, would share one
        entered = self.clock.now()
        try:
            answer, reservation = await self.svc.gate.enter(scopes, slot, est, budget, amount, entered)
        except Exception as exc:
            # The step may have run all the same (a Redis reply that timed out): never repeat it. Free the
            # slot and settle the lease it may hold when the call ends (a lease that did not land is not
            # settled), and let the budget stage apply its policy without a second reservation.
            self.svc.store_error("limits", exc)
            ctx.state[_STATE] = (scopes, slot, 0, False, 0, entered)
            if budget:
                ctx.state[JOINT_FAILED] = (budget, amount, entered, slot)
            if self.svc.config.limits_on_store_error == "closed":
                raise errors.Unavailable("Rate limits cannot be checked right now; try again shortly.",
                                         retry_after=1.0) from None
            return None
        _add_headers(ctx.response_headers, answer)
        if not answer.allowed:
            what = {"rpm": "requests per minute", "tpm": "tokens per minute",
                    "parallel": "parallel requests"}[answer.reason]
            raise errors.RateLimited(
                f"Rate limit reached for {answer.scope.split(':')[0]} ({what}). "
                f"Retry after {math.ceil(answer.retry_after_s)} s.",
                code="rate_limit_exceeded", retry_after=max(1.0, answer.retry_after_s))
        ctx.state[_STATE] = (scopes, slot, est, tpm, answer.taken_at, entered)
        if reservation is not None:
            ctx.state[REFUSED if not reservation.allowed else JOINT] = reservation if not reservation.allowed \
                else (budget, amount, entered, slot)
        return None

    async def on_finish(self, ctx: RequestContext) -> None:
        taken = ctx.state.get(_STATE)
        if taken is None:
            return
        scopes, slot, est, tpm, taken_at, entered = taken
        # tokens per minute count what upstreams processed: an answer from the cache (or a rule) used none,
        # so its estimate goes back whole (its request still counted against rpm and max_parallel)
        used = 0 if ctx.handled_by or not tpm else measure(ctx, self.svc).tokens.total
        delta = used - est if tpm else 0
        joint = (ctx.state.get(JOINT) or ctx.state.get(JOINT_FAILED)) if SETTLED not in ctx.state else None
        budget, reserved, _, _ = joint if joint is not None else ([], 0, 0.0, "")
        actual = measure(ctx, self.svc).cost_nano if joint is not None else 0
        thresholds = self.svc.config.alert_thresholds
        gate = self.svc.gate
        dep = scopes[-1] if scopes and scopes[-1].kind == "deployment" else None
        served = ctx.served_by
        try:
            if dep is None or not dep.limits.tpm or served is None or served.id == dep.id:
                crossed = await gate.leave(scopes, slot, delta, taken_at, budget, reserved, actual, entered,
                                           thresholds)
            else:
                # Another deployment answered (a fallback model's): the tokens are not this deployment's. Its
                # estimate goes back; they count in the window of the deployment that used them, when that one
                # has a tpm scope of its own. The steps leave in one loop turn: one Redis call.
                steps = [gate.leave(key_scopes(ctx, "rate"), slot, delta, taken_at, budget, reserved, actual,
                                    entered, thresholds),
                         gate.leave(self._deployment_lists[dep.id], slot, -est, taken_at, [], 0, 0, entered, [])]
                other = self._deployment_lists.get(served.id)
                if other is not None and other[0].limits.tpm and used:
                    steps.append(gate.leave(other, slot, used, taken_at, [], 0, 0, entered, []))
                crossed = (await asyncio.gather(*steps))[0]
        except Exception as exc:  # parallel slots expire on their own (TTL)
            self.svc.store_error("limits", exc)
            if joint is not None:  # it may have been settled all the same: never settle twice
                ctx.state[SETTLED] = []
            return
        if joint is not None:
            ctx.state[SETTLED] = crossed


def _add_headers(out: dict[str, str], a: Admission) -> None:
    if a.limit_requests is not None:
        out["x-ratelimit-limit-requests"] = str(a.limit_requests)
        out["x-ratelimit-remaining-requests"] = str(a.remaining_requests or 0)
        out["x-ratelimit-reset-requests"] = f"{math.ceil(a.reset_requests_s)}s"
    if a.limit_tokens is not None:
        out["x-ratelimit-limit-tokens"] = str(a.limit_tokens)
        out["x-ratelimit-remaining-tokens"] = str(a.remaining_tokens or 0)


def _deployment_scopes(deps: StageDeps) -> dict[str, Scope]:
    by_model: dict[str, list[Scope]] = {}
    for d in deps.config.models:
        lim = Limits(rpm=d.rpm, tpm=d.tpm)
        by_model.setdefault(d.name, []).append(Scope("deployment", d.id, lim))
    return {m: s[0] for m, s in by_model.items() if len(s) == 1 and (s[0].limits.rpm or s[0].limits.tpm)}


def build(deps: StageDeps) -> Stage | None:
    svc = deps.services.get(SERVICE)
    if not isinstance(svc, TenancyServices):
        return None
    return LimitsStage(svc, _deployment_scopes(deps), deps.clock)
