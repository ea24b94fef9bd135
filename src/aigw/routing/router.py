"""Turns a public model name into an upstream call, and keeps it answering while upstreams fail.

Per request: pick a deployment of the model (its strategy; open breakers, cooling
and over-cap deployments skipped, caps checked exactly in the shared store when the
pipeline gives ``RouteRequest.caps``; a half-open one gets a trial call first), call it
within its timeouts, retry retryable failures (``num_retries``, another deployment
first, backoff with jitter, Retry-After honoured; a deployment out of quota is not
called again), then walk the fallback chain; context-length and content-policy
failures switch to their own chains; a request a deployment's adapter refuses before
calling its upstream (one its provider cannot take) goes on to those that can, at no
cost (``retry.unfit``). The whole request, waits included, ends by its
deadline (the smallest of the request's, the model's and the server's). The router
knows nothing of tenants, keys or caches: the pipeline's route terminal adapts a
request context to ``RouteRequest``.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from aigw import errors
from aigw.config.models import CircuitBreakerConfig, ModelRouting
from aigw.providers.base import CallOptions, Timeouts
from aigw.routing.attempts import AttemptHook, Attempts, Endpoint, RouteRequest, Served, Slot, Target, timeouts_for
from aigw.routing.book import HealthBook
from aigw.routing.breaker import CLOSED, HALF_OPEN, OPEN
from aigw.routing.refusals import none_left
from aigw.routing.retry import backoff_s, dead_deployment, moves_on, resolve_policies
from aigw.routing.strategies import STRATEGIES
from aigw.supervise import Supervisor
from aigw.types import JSON, Clock, SystemClock

__all__ = ["RouteRequest", "Router", "Served", "Target"]

T = TypeVar("T")
# (slot, request, served, call, a half-open trial, the call's time is cut to the client's own deadline)
Attempt = Callable[[Slot, RouteRequest, Served, CallOptions, bool, bool], Awaitable[T]]
Loop = Callable[[], Coroutine[Any, Any, None]]


class Router:
    def __init__(
        self, targets: list[Target], default_timeout_s: float = 600.0, *,
        routing: dict[str, ModelRouting] | None = None, breaker: CircuitBreakerConfig | None = None,
        clock: Clock | None = None, supervisor: Supervisor | None = None,
        costs: dict[str, float | None] | None = None, rng: random.Random | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.supervisor = supervisor or Supervisor()
        self.book = HealthBook([t.deployment for t in targets], breaker or CircuitBreakerConfig(), self.clock,
                               self.supervisor, costs)
        self._attempts = Attempts(self.book)
        self._by_model: dict[str, list[Slot]] = {}
        for t in targets:
            self._by_model.setdefault(t.deployment.name, []).append(Slot(t, self.book.state(t.deployment.id)))
        self.policies = resolve_policies(routing or {}, list(self._by_model))
        self._default_timeout_s = default_timeout_s
        self._rng = rng or random.Random()
        self._background: list[tuple[str, Loop, Callable[[], None]]] = []
        self._usable: dict[tuple[str, str], list[Slot]] = {}  # (model, endpoint) -> usable slots

    def observe_attempts(self, hook: AttemptHook) -> None:
        """Tell ``hook`` of every upstream attempt as it ends (metrics count each against its deployment)."""
        self._attempts.on_attempt = hook

    # -- catalogue ---------------------------------------------------------------
    def model_names(self) -> list[str]:
        return list(self._by_model)

    def targets(self, model: str) -> list[Target]:
        return [s.target for s in self._by_model.get(model, ())]

    def all_targets(self) -> list[Target]:
        return [s.target for slots in self._by_model.values() for s in slots]

    def slots(self) -> list[Slot]:
        return [s for slots in self._by_model.values() for s in slots]

    def policy(self, model: str) -> ModelRouting:
        return self.policies.get(model) or ModelRouting()

    def candidates(self, model: str, endpoint: Endpoint) -> list[Target]:
        return [s.target for s in self._slots(model, endpoint)]

    def _slots(self, model: str, endpoint: Endpoint) -> list[Slot]:
        key = (model, endpoint)
        usable = self._usable.get(key)
        if usable is None:
            usable = self._usable[key] = self._find_slots(model, endpoint)
        return usable

    def _find_slots(self, model: str, endpoint: Endpoint) -> list[Slot]:
        slots = self._by_model.get(model)
        if not slots:
            raise errors.NotFound(f"The model `{model}` does not exist or you do not have access to it.",
                                  param="model", code="model_not_found")
        mode = "embeddings" if endpoint == "embeddings" else "chat"
        usable = [s for s in slots if mode in s.target.deployment.modes
                  or (endpoint == "completions" and "completions" in s.target.deployment.modes)]
        if not usable:
            raise errors.InvalidRequest(f"The model `{model}` does not support {endpoint}.", param="model")
        return usable

    def timeouts_for(self, target: Target, req: RouteRequest) -> Timeouts:
        policy = self.policy(req.model)
        return timeouts_for(target.deployment, self.budget_s(req.model, req.deadline_s),
                            policy.first_token_timeout_s, policy.chunk_timeout_s)

    def budget_s(self, model: str, deadline_s: float | None = None) -> float:
        """A request's whole time for ``model``: the client's limit, the model's ``timeout_s`` and the default,
        whichever is shortest (all its attempts, waits and fallbacks; an output retry's second call too)."""
        policy = self.policy(model)
        return min(x for x in (deadline_s, policy.timeout_s, self._default_timeout_s) if x)

    # -- calls -------------------------------------------------------------------
    async def complete(self, req: RouteRequest) -> tuple[JSON, Served]:
        return await self._route(req, self._attempts.complete, stream=False)

    async def open_stream(self, req: RouteRequest) -> tuple[AsyncIterator[JSON], Served]:
        """Start a stream and wait for its first chunk with content (opening chunks that say nothing are
        held), so that failures before the first byte are retried or fall back here; after it, a failure
        ends the stream with an error."""
        return await self._route(req, self._attempts.open_stream, stream=True)

    async def _route(self, req: RouteRequest, attempt: Attempt[T], stream: bool) -> tuple[T, Served]:
        policy = self.policy(req.model)
        served = req.served = Served(model=req.model)
        budget = self.budget_s(req.model, req.deadline_s)
        deadline = self.clock.monotonic() + budget
        chain = [req.model, *policy.fallbacks] if policy.fallbacks else [req.model]
        used: list[str] = []
        last: errors.GatewayError | None = None
        soonest: errors.RateLimited | None = None  # of the chain's models refused for their limits, the shortest wait
        refused: errors.GatewayError | None = None  # the first up-front refusal (``retry.unfit``)
        i = 0
        while i < len(chain):
            model = chain[i]
            i += 1
            if model in used or (model != req.model and req.allowed is not None and model not in req.allowed):
                continue  # tried already, or a fallback the caller's key may not use
            used.append(model)
            try:
                slots = self._slots(model, req.endpoint)
            except errors.GatewayError:
                if model == req.model:
                    raise
                continue  # a fallback that cannot serve this endpoint: try the next one
            if model != req.model:
                served.fallbacks.append(model)
            try:
                rules = policy if model == req.model else self.policy(model)
                result = await self._serve_model(model, slots, rules, req, attempt, served, deadline, stream)
            except errors.GatewayError as err:
                # one no deployment of this model could take (``retry.unfit``): the next model may
                last, refused = (last, refused or err) if err.unfit else (err, refused)
                if isinstance(err, errors.RateLimited) and err.retry_after is not None and (  # 0: room now
                        soonest is None or soonest.retry_after is None or err.retry_after < soonest.retry_after):
                    soonest = err
                special = _special_chain(policy, err)
                if special is not None:
                    chain, i = special, 0
                    continue
                if not moves_on(err):
                    raise
                if self.clock.monotonic() >= deadline:
                    raise _expired(budget, served) from None
                continue
            served.model = model
            return result, served
        if last is None:  # every deployment of the chain refused the request up front: the client's 400
            assert refused is not None
            raise refused
        final = soonest if isinstance(last, errors.RateLimited) and soonest is not None else last
        raise final  # every model at its limits: the client may come back when the first has room

    async def _serve_model(self, model: str, slots: list[Slot], policy: ModelRouting, req: RouteRequest,
                           attempt: Attempt[T], served: Served, deadline: float, stream: bool) -> T:
        failed: dict[str, errors.GatewayError] = {}  # deployment id -> its last error in this request
        failed_at: dict[str, float] = {}  # deployment id -> when that error came (its Retry-After counts from then)
        full: dict[str, float] = {}  # deployment id -> seconds until its exact caps have room (``req.caps``)
        last: errors.GatewayError | None = None
        # the client's own limit is shorter than the operator's: an attempt cut to it that times out says
        # nothing of the upstream (one impatient client must not open the breaker for everyone)
        clients = req.deadline_s is not None and req.deadline_s < self.budget_s(req.model)
        n = 0
        while n <= policy.num_retries:
            try:
                slot, trial, wait = await self._pick(model, slots, policy, req, failed, failed_at, full, stream,
                                                     n, deadline, last)
            except errors.GatewayError:
                if failed and last is None and all(s.state.id in failed for s in slots):  # all refused it
                    raise next(iter(failed.values())) from None  # up front (``retry.unfit``): the first refusal
                raise
            if wait > 0:
                try:
                    await asyncio.sleep(wait)
                except BaseException:
                    if trial:
                        self.book.release_trial(slot.state)
                    raise
            if n:
                served.retries += 1
            now = self.clock.monotonic()
            served.attempts += 1
            call = CallOptions(slot.timeouts(deadline - now, policy.first_token_timeout_s, policy.chunk_timeout_s),
                               req.headers)
            theirs = clients and (call.timeouts.total or math.inf) < (slot.target.deployment.timeout_s or math.inf)
            try:
                return await attempt(slot, req, served, call, trial, theirs)
            except errors.GatewayError as err:
                if not moves_on(err):
                    raise
                failed[slot.state.id] = err
                if err.unfit:  # refused before any upstream call: no attempt, no retry spent
                    served.attempts, served.retries = served.attempts - 1, served.retries - (1 if n else 0)
                    continue
                last = err
                failed_at[slot.state.id] = self.clock.monotonic()
                if self.clock.monotonic() >= deadline:
                    raise
            n += 1
        assert last is not None
        raise last

    async def _choose(self, model: str, slots: list[Slot], policy: ModelRouting,
                      failed: dict[str, errors.GatewayError], stream: bool,
                      full: dict[str, float] | None = None, asked: str | None = None) -> tuple[Slot, bool]:
        """The deployment for the next attempt, and whether it is a half-open trial (``asked``: the model the
        client asked for, when ``model`` is its fallback: a refusal names both, ``_named``).

        ``full``: given when the caller checks each capped deployment's caps exactly (``RouteRequest.caps``),
        so this replica's estimate of them is not used; it holds those found at their caps (id -> wait)."""
        now = self.clock.monotonic()
        wall = self.clock.now()
        ready: list[Slot] = []
        cooling: Slot | None = None
        capped = False
        reopen = math.inf
        for slot in slots:
            s = slot.state
            if failed and s.id in failed and (dead_deployment(failed[s.id]) or _asks_too_long(failed[s.id], policy)):
                continue  # out of quota (another call cannot help), or asked for a wait longer than we wait for
            phase = s.breaker.phase(now)
            if full and s.id in full:
                capped = True
            elif phase == OPEN:
                reopen = min(reopen, s.breaker.until)
            elif s.capped and full is None and s.over_caps(wall):
                capped = True
            elif s.cool_until > now:
                if cooling is None or s.cool_until < cooling.state.cool_until:
                    cooling = slot
            elif phase == HALF_OPEN:
                if await self.book.admit_trial(s):
                    return slot, True
                reopen = min(reopen, now + 1.0)
            else:
                ready.append(slot)
        if ready:
            if failed and policy.retry_other_deployments:
                fresh = [x for x in ready if x.state.id not in failed]
                ready = fresh or ready
            if len(ready) == 1:
                return ready[0], False
            pick = STRATEGIES[policy.strategy]
            return ready[pick([x.state for x in ready], self._rng, stream, policy.latency_buffer)], False
        if cooling is not None and max(cooling.state.cool_until, cooling.state.asked_until) - now \
                <= policy.max_retry_after_s:
            # a short Retry-After: wait it out (``_wait``) rather than fail; one longer than we wait for is not
            # waited out by a later request either, though its cooling is capped to ``cooldown_s``
            return cooling, False
        raise none_left(_named(model, asked), now, reopen, capped, cooling, wall,
                         min(full.values()) if full else None)

    def _only_ready(self, slots: list[Slot]) -> Slot | None:
        """The common case without ceremony: one deployment, closed, uncapped, not cooling."""
        if len(slots) != 1:
            return None
        s = slots[0].state
        now = self.clock.monotonic()
        if s.capped or s.cool_until > now or s.breaker.phase(now) != CLOSED:
            return None
        return slots[0]

    async def _pick(self, model: str, slots: list[Slot], policy: ModelRouting, req: RouteRequest,
                    failed: dict[str, errors.GatewayError], failed_at: dict[str, float], full: dict[str, float],
                    stream: bool, n: int, deadline: float,
                    last: errors.GatewayError | None) -> tuple[Slot, bool, float]:
        """The deployment for attempt ``n``, whether it is a half-open trial, and how long to wait before
        calling it. A capped one is taken in the exact caps (``req.caps``) only once that wait is known to fit
        the deadline, so nothing is counted for a call that will not be made; one at its caps is skipped and
        another chosen (``full``)."""
        slot = self._only_ready(slots) if not failed else None
        trial = False
        while True:
            if slot is None:
                try:
                    slot, trial = await self._choose(model, slots, policy, failed, stream,
                                                     full if req.caps is not None else None, req.model)
                except errors.GatewayError:
                    if last is not None:
                        raise last from None
                    raise
            try:
                wait = self._wait_s(slot, n, policy, failed.get(slot.state.id), failed_at.get(slot.state.id, 0.0),
                                    deadline, last)
                room = await req.caps.admit(slot.state.id) if req.caps is not None and slot.state.capped else None
            except BaseException:
                if trial:
                    self.book.release_trial(slot.state)
                raise
            if room is None:
                return slot, trial, wait
            full[slot.state.id] = room  # at its cap: not called, not counted as an attempt
            if trial:
                self.book.release_trial(slot.state)
            slot = None

    def _wait_s(self, slot: Slot, n: int, policy: ModelRouting, prev: errors.GatewayError | None, prev_at: float,
                deadline: float, last: errors.GatewayError | None) -> float:
        """How long to back off before going back to a deployment that failed: at least what is left of its
        Retry-After (which counts from ``prev_at``, when it came: attempts elsewhere may have used it up).
        Raises when that is longer than the policy waits for, or than the deadline allows."""
        now = self.clock.monotonic()
        wait = max(0.0, slot.state.cool_until - now)
        if prev is not None:
            if prev.retry_after is not None and prev.retry_after > policy.max_retry_after_s:
                raise prev  # longer than we wait for: let the fallbacks or the client decide
            wait = max(wait, backoff_s(n, policy, self._rng), (prev.retry_after or 0.0) - (now - prev_at))
        if wait > 0 and now + wait >= deadline:
            raise last or errors.RateLimited("the model's deployments are rate limited", retry_after=wait)
        return wait

    # -- background ------------------------------------------------------------------
    def add_background(self, name: str, run: Loop, stop: Callable[[], None]) -> None:
        """A loop to run while serving (shared-state sync, probe); see ``routing.setup``."""
        self._background.append((name, run, stop))

    async def start(self) -> None:
        for name, run, _ in self._background:
            self.supervisor.spawn(run(), name=name)

    async def stop(self) -> None:
        for _, _, stop in self._background:
            stop()


def _asks_too_long(err: errors.GatewayError, policy: ModelRouting) -> bool:
    """The upstream asked for a wait (Retry-After) longer than the model waits for: not called again in this
    request, its siblings and the fallbacks may still answer (``_wait_s`` would give up the whole model)."""
    return err.retry_after is not None and err.retry_after > policy.max_retry_after_s


def _special_chain(policy: ModelRouting, err: errors.GatewayError) -> list[str] | None:
    if err.kind == "context_length_exceeded" and policy.context_window_fallbacks:
        return list(policy.context_window_fallbacks)
    if err.kind == "content_policy" and policy.content_policy_fallbacks:
        return list(policy.content_policy_fallbacks)
    return None


def _expired(budget: float, served: Served) -> errors.UpstreamTimeout:
    n = served.attempts  # the budget is what was left of the client's limit after the stages: rounded
    return errors.UpstreamTimeout(f"no upstream answered within the request's {round(budget, 2):g} s timeout "
                                  f"({n} attempt{'' if n == 1 else 's'})")


def _named(model: str, asked: str | None) -> str:
    """``model`` as a refusal of the gateway's own names it: a fallback with the model the client asked for,
    the one it knows (a 429 naming only the fallback reads as if the client had asked for that)."""
    return f"`{model}`" if asked is None or model == asked else f"`{model}` (the fallback of `{asked}`)"
