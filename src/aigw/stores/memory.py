"""Hot state in process memory: rate-limit windows, the gate over them and the budget counters
(``memory_budgets.py``), key version.

The embedded twin of ``stores/redis/``: the same rules, the same answers, for a
single process. Every check-and-commit runs without an ``await`` in between, so
on one event loop it is as atomic as the Redis Lua scripts.

Rate windows are sliding: one bucket per second over the last 60 seconds, so a
limit of N per minute admits N in any window of 60 whole seconds (exact to the second, not finer:
see docs/tenancy.md).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from aigw.stores.base import Admission, Reservation, Scope
from aigw.stores.memory_budgets import MemoryBudgets
from aigw.types import Clock, SystemClock

WINDOW_S = 60


class _Window:
    """Per-second counts of the last minute for one scope and measure, with a running total."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque()  # [second, count], oldest first
        self.total = 0

    def used(self, sec: int) -> int:
        buckets = self.buckets
        while buckets and buckets[0][0] <= sec - WINDOW_S:
            self.total -= buckets.popleft()[1]
        return self.total

    def wait_s(self, now: float, used: int, need: int, cap: int) -> float:
        """Seconds until enough old buckets fall out of the window to fit ``need`` more."""
        freed = 0
        for s, n in self.buckets:
            freed += n
            if used - freed + need <= cap:
                return max(0.0, s + WINDOW_S - now)
        return float(WINDOW_S)

    def frees_in(self, now: float) -> float:
        """Seconds until the oldest count still in the window leaves it (0: the window is empty)."""
        for s, n in self.buckets:
            if n > 0:  # a bucket refunded to nothing frees nothing
                return max(0.0, s + WINDOW_S - now)
        return 0.0

    def refund(self, sec: int, n: int) -> None:
        """Take ``n`` back from the bucket of second ``sec`` (a settled estimate); gone with it if that
        bucket has left the window (a refund moved to a later second would push a later minute under)."""
        for bucket in reversed(self.buckets):
            if bucket[0] == sec:
                back = min(n, bucket[1])
                bucket[1] -= back
                self.total -= back
                return
            if bucket[0] < sec:
                return

    def add(self, sec: int, n: int) -> None:
        buckets = self.buckets
        if buckets and buckets[-1][0] == sec:
            buckets[-1][1] += n
        else:
            buckets.append([sec, n])
        self.total += n


@dataclass(slots=True)
class _ScopeState:
    requests: _Window = field(default_factory=_Window)
    tokens: _Window = field(default_factory=_Window)
    inflight: dict[str, float] = field(default_factory=dict)  # slot -> expiry


class MemoryRateLimiter:
    """rpm, tpm and max-parallel for any number of scopes, checked and taken together."""

    def __init__(self, clock: Clock | None = None, parallel_ttl_s: float = 900.0) -> None:
        self._clock = clock or SystemClock()
        self._ttl = parallel_ttl_s
        self._state: dict[str, _ScopeState] = {}
        # A key's scope list is shared by all its requests (the key cache builds it once), so
        # its states are looked up once per list, not once per request and scope.
        self._by_list: dict[int, tuple[list[Scope], list[_Level]]] = {}

    def now(self) -> float:
        return self._clock.now()

    async def admit(self, scopes: list[Scope], slot: str, est_tokens: int) -> Admission:
        return self.take(scopes, slot, est_tokens, self._clock.now())

    async def release(self, scopes: list[Scope], slot: str, token_delta: int, taken_at: int = 0,
                      request_back: bool = False) -> None:
        self.give_back(scopes, slot, token_delta, taken_at, self._clock.now(), request_back)

    def _levels(self, scopes: list[Scope]) -> list[_Level]:
        """Each scope with its caps and live state, resolved once per scope list."""
        known = self._by_list.get(id(scopes))
        if known is not None and known[0] is scopes:  # the entry holds the list: its id is not reused
            return known[1]
        state = self._state
        out = []
        for scope in scopes:
            st = state.get(scope.ref)
            if st is None:
                st = state[scope.ref] = _ScopeState()
            lim = scope.limits
            out.append((scope, lim.rpm or 0, lim.tpm or 0, lim.max_parallel or 0, st.requests, st.tokens,
                        st.inflight))
        if len(self._by_list) >= 10_000:  # lists of keys dropped from the key cache
            self._by_list.clear()
        self._by_list[id(scopes)] = (scopes, out)
        return out

    def take(self, scopes: list[Scope], slot: str, est_tokens: int, now: float) -> Admission:
        """Check every scope, then take from all of them, or from none (no await in between)."""
        # Runs for every request at up to four levels: the window bookkeeping is inlined here
        # (expire what fell out of the minute, then compare the running totals).
        sec = int(now)
        cutoff = sec - WINDOW_S
        levels = self._levels(scopes)
        for scope, rpm, tpm, parallel, req, tok, inflight in levels:
            if rpm:
                buckets = req.buckets
                if buckets and buckets[0][0] <= cutoff:
                    req.used(sec)
                if req.total >= rpm:
                    return _refuse(levels, scope, "rpm", req.wait_s(now, req.total, 1, rpm), now, est_tokens)
            if tpm:
                buckets = tok.buckets
                if buckets and buckets[0][0] <= cutoff:
                    tok.used(sec)
                if tok.total + est_tokens > tpm:
                    return _refuse(levels, scope, "tpm", tok.wait_s(now, tok.total, est_tokens, tpm), now,
                                   est_tokens)
            if parallel and len(inflight) >= parallel:
                for rid in [r for r, exp in inflight.items() if exp <= now]:  # slots of lost calls
                    del inflight[rid]
                if len(inflight) >= parallel:
                    return _refuse(levels, scope, "parallel", 1.0, now, est_tokens)
        if not levels:
            return Admission(allowed=True, taken_at=sec)
        expires = now + self._ttl
        # take (``_Window.add``, inlined), and note for requests and for tokens the level with the least left now
        # that this call is counted (the one that refuses first; the earliest on a tie), not the key's when another
        # is tighter
        lim_r = lim_t = left_r = left_t = 0
        req_w: _Window | None = None
        tok_w: _Window | None = None
        for _, rpm, tpm, parallel, req, tok, inflight in levels:
            if rpm:
                buckets = req.buckets
                if buckets and (last := buckets[-1])[0] == sec:
                    last[1] += 1
                else:
                    buckets.append([sec, 1])
                total = req.total = req.total + 1
                if req_w is None or rpm - total < left_r:
                    lim_r, left_r, req_w = rpm, rpm - total, req
            if tpm:
                if est_tokens:
                    buckets = tok.buckets
                    if buckets and (last := buckets[-1])[0] == sec:
                        last[1] += est_tokens
                    else:
                        buckets.append([sec, est_tokens])
                    tok.total += est_tokens
                if tok_w is None or tpm - tok.total < left_t:
                    lim_t, left_t, tok_w = tpm, tpm - tok.total, tok
            if parallel:
                inflight[slot] = expires
        # resets: when the oldest request (tokens) counted leaves the window: more fits from then on
        # (positional: this runs for every call, and keywords cost more)
        return Admission(True, "", "", 0.0, lim_r or None, max(0, left_r) if lim_r else None, lim_t or None,
                         max(0, left_t) if lim_t else None, req_w.frees_in(now) if req_w is not None else 0.0,
                         tok_w.frees_in(now) if tok_w is not None else 0.0, sec)

    async def peek(self, scopes: list[Scope]) -> list[Admission]:
        return self.figures(scopes, self._clock.now())

    def figures(self, scopes: list[Scope], now: float) -> list[Admission]:
        """Each scope's figures as they stand, nothing taken (``Gate.peek``)."""
        sec = int(now)
        out = []
        for _, rpm, tpm, _, req, tok, _ in self._levels(scopes):
            used_r, used_t = req.used(sec), tok.used(sec)  # expire first: the reset is of what is left
            out.append(Admission(allowed=False, limit_requests=rpm or None,
                                 remaining_requests=max(0, rpm - used_r) if rpm else None,
                                 limit_tokens=tpm or None, remaining_tokens=max(0, tpm - used_t) if tpm else None,
                                 reset_requests_s=req.frees_in(now) if rpm else 0.0,
                                 reset_tokens_s=tok.frees_in(now) if tpm else 0.0))
        return out

    def give_back(self, scopes: list[Scope], slot: str, token_delta: int, taken_at: int, now: float,
                  request_back: bool = False) -> None:
        """Settle the token estimate to the real count and free the parallel slot (and, with
        ``request_back``, take the request back out of the second that counted it)."""
        sec = int(now)
        for _, rpm, tpm, _, req, tok, inflight in self._levels(scopes):
            if request_back and rpm:
                req.refund(taken_at, 1)
            if token_delta and tpm:
                if token_delta > 0:
                    tok.add(sec, token_delta)  # used beyond the estimate: used now
                else:
                    tok.refund(taken_at, -token_delta)
            if inflight:
                inflight.pop(slot, None)


# One scope resolved for the hot path: (scope, rpm, tpm, max parallel, requests, tokens, in flight).
_Level = tuple[Scope, int, int, int, _Window, _Window, dict[str, float]]


def _refuse(levels: list[_Level], refusing: Scope, reason: str, wait_s: float, now: float,
            est_tokens: int) -> Admission:
    """A refusal (the cold path: nothing was taken) with every figure an accepted call would carry, not only the
    refusing level's: for requests and for tokens the level with the fewest left (the refusing one for what it
    refused), and when that level lets one more request (this estimate) through, 0 when it would now.

    The refusal is the level (and measure) that lets the call through last, not merely the first that refused:
    a client told the key's wait found the project's still full and met a second 429."""
    sec = int(now)
    refusing, reason, wait_s = _longest(levels, refusing, reason, wait_s, now, est_tokens)
    lim_r = lim_t = left_r = left_t = 0
    reset_r = reset_t = 0.0
    for scope, rpm, tpm, _, req, tok, _ in levels:
        if rpm:
            used = req.used(sec)
            if scope is refusing if reason == "rpm" else not lim_r or rpm - used - 1 < left_r:
                lim_r, left_r = rpm, rpm - used - 1
                reset_r = wait_s if reason == "rpm" else (0.0 if used < rpm else req.wait_s(now, used, 1, rpm))
        if tpm:
            used = tok.used(sec)
            if scope is refusing if reason == "tpm" else not lim_t or tpm - used - est_tokens < left_t:
                lim_t, left_t = tpm, tpm - used - est_tokens
                reset_t = wait_s if reason == "tpm" else \
                    (0.0 if used + est_tokens <= tpm else tok.wait_s(now, used, est_tokens, tpm))
    return Admission(allowed=False, scope=refusing.ref, reason=reason, retry_after_s=wait_s,
                     limit_requests=lim_r or None, remaining_requests=max(0, left_r) if lim_r else None,
                     limit_tokens=lim_t or None, remaining_tokens=max(0, left_t) if lim_t else None,
                     reset_requests_s=reset_r, reset_tokens_s=reset_t)


def _longest(levels: list[_Level], refusing: Scope, reason: str, wait_s: float, now: float,
             est_tokens: int) -> tuple[Scope, str, float]:
    """Of every level and measure that refuses this call now, the one whose wait is longest (the first refusal
    on a tie): waiting that long, the call finds room at all of them."""
    sec = int(now)
    for scope, rpm, tpm, parallel, req, tok, inflight in levels:
        if rpm and (used := req.used(sec)) >= rpm and (w := req.wait_s(now, used, 1, rpm)) > wait_s:
            refusing, reason, wait_s = scope, "rpm", w
        used = tok.used(sec) if tpm else 0
        if tpm and used + est_tokens > tpm and (w := tok.wait_s(now, used, est_tokens, tpm)) > wait_s:
            refusing, reason, wait_s = scope, "tpm", w
        if parallel and wait_s < 1.0 and sum(exp > now for exp in inflight.values()) >= parallel:
            refusing, reason, wait_s = scope, "parallel", 1.0
    return refusing, reason, wait_s


class MemoryGate:
    """Rate limits, then the budget reservation, as one step (nothing awaits in between)."""

    def __init__(self, limiter: MemoryRateLimiter, budgets: MemoryBudgets) -> None:
        self.limiter = limiter
        self.budgets = budgets

    async def enter(self, rate: list[Scope], slot: str, est_tokens: int, budget: list[Scope],
                    amount_nano: int, now: float) -> tuple[Admission, Reservation | None]:
        admission = self.limiter.take(rate, slot, est_tokens, now) if rate else ALLOWED
        if not admission.allowed or not budget:
            return admission, None
        return admission, self.budgets.reserve_now(budget, amount_nano, now, slot)

    async def peek(self, rate: list[Scope]) -> list[Admission]:
        return self.limiter.figures(rate, self.limiter.now())

    async def leave(self, rate: list[Scope], slot: str, token_delta: int, taken_at: int, budget: list[Scope],
                    reserved_nano: int, actual_nano: int, entered: float,
                    thresholds: list[float], request_back: bool = False) -> list[tuple[str, str, float]]:
        if rate:
            self.limiter.give_back(rate, slot, token_delta, taken_at, self.limiter.now(), request_back)
        if not budget:
            return []
        return self.budgets.settle_now(budget, slot, reserved_nano, actual_nano, entered, thresholds)


ALLOWED = Admission(allowed=True)  # shared: no rate scope, nothing to report


class MemoryKeyVersion:
    """A key-change counter for one process (the SQLite database holds the shared one)."""

    def __init__(self) -> None:
        self._v = 0

    async def get(self) -> int:
        return self._v

    async def bump(self) -> int:
        self._v += 1
        return self._v
