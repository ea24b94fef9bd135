"""Hot state in process memory: rate-limit windows, budget counters, key version.

The embedded twin of ``stores/redis/``: the same rules, the same answers, for a
single process. Every check-and-commit runs without an ``await`` in between, so
on one event loop it is as atomic as the Redis Lua scripts.

Rate windows are sliding: one bucket per second over the last 60 seconds, so a
limit of N per minute admits exactly N in any 60-second span (to the second).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from aigw.stores.base import Admission, Reservation, Scope, window_of
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
    inflight: dict[str, float] = field(default_factory=dict)  # request id -> expiry


class MemoryRateLimiter:
    """rpm, tpm and max-parallel for any number of scopes, checked and taken together."""

    def __init__(self, clock: Clock | None = None, parallel_ttl_s: float = 900.0) -> None:
        self._clock = clock or SystemClock()
        self._ttl = parallel_ttl_s
        self._state: dict[str, _ScopeState] = {}

    def _get(self, scope: Scope) -> _ScopeState:
        st = self._state.get(scope.ref)
        if st is None:
            st = self._state[scope.ref] = _ScopeState()
        return st

    async def admit(self, scopes: list[Scope], request_id: str, est_tokens: int) -> Admission:
        now = self._clock.now()
        sec = int(now)
        head: tuple[int | None, int | None, int | None, int | None] | None = None
        states: list[_ScopeState] = []
        for scope in scopes:
            lim, st = scope.limits, self._get(scope)
            states.append(st)
            lr = rr = lt = rt = None
            if lim.rpm:
                used = st.requests.used(sec)
                lr, rr = lim.rpm, max(0, lim.rpm - used - 1)
                if used + 1 > lim.rpm:
                    return _refuse(scope, "rpm", st.requests.wait_s(now, used, 1, lim.rpm), (lr, rr, lt, rt))
            if lim.tpm:
                used = st.tokens.used(sec)
                lt, rt = lim.tpm, max(0, lim.tpm - used - est_tokens)
                if used + est_tokens > lim.tpm:
                    return _refuse(scope, "tpm", st.tokens.wait_s(now, used, est_tokens, lim.tpm), (lr, rr, lt, rt))
            if lim.max_parallel and len(st.inflight) >= lim.max_parallel:
                for rid in [r for r, exp in st.inflight.items() if exp <= now]:  # slots of lost calls
                    del st.inflight[rid]
                if len(st.inflight) >= lim.max_parallel:
                    return _refuse(scope, "parallel", 1.0, (lr, rr, lt, rt))
            if head is None:
                head = (lr, rr, lt, rt)
        for scope, st in zip(scopes, states, strict=True):
            lim = scope.limits
            if lim.rpm:
                st.requests.add(sec, 1)
            if lim.tpm and est_tokens:
                st.tokens.add(sec, est_tokens)
            if lim.max_parallel:
                st.inflight[request_id] = now + self._ttl
        lr, rr, lt, rt = head or (None, None, None, None)
        return Admission(allowed=True, limit_requests=lr, remaining_requests=rr, limit_tokens=lt, remaining_tokens=rt)

    async def release(self, scopes: list[Scope], request_id: str, token_delta: int) -> None:
        sec = int(self._clock.now())
        for scope in scopes:
            st = self._state.get(scope.ref)
            if st is None:
                continue
            if scope.limits.tpm and token_delta:
                st.tokens.add(sec, token_delta)
            st.inflight.pop(request_id, None)


def _refuse(scope: Scope, reason: str, wait_s: float,
            head: tuple[int | None, int | None, int | None, int | None]) -> Admission:
    return Admission(allowed=False, scope=scope.ref, reason=reason, retry_after_s=wait_s, reset_requests_s=wait_s,
                     limit_requests=head[0], remaining_requests=head[1], limit_tokens=head[2],
                     remaining_tokens=head[3])


class MemoryBudgets:
    """Spend per scope and budget window in nano-dollars: reserve, then settle."""

    def __init__(self) -> None:
        self._spent: dict[str, dict[str, int]] = {}  # scope ref -> window -> nano-dollars
        self._alerted: set[tuple[str, str, float]] = set()

    def _windows(self, ref: str) -> dict[str, int]:
        windows = self._spent.get(ref)
        if windows is None:
            windows = self._spent[ref] = {}
        return windows

    async def reserve(self, scopes: list[Scope], amount_nano: int, now: float) -> Reservation:
        for s in scopes:
            if s.limits.budget_usd is None:
                continue
            spent = self._windows(s.ref).get(window_of(s.limits.budget_period, now), 0)
            if spent + amount_nano > s.budget_nano:
                return Reservation(allowed=False, scope=s.ref, limit_nano=s.budget_nano, spent_nano=spent)
        for s in scopes:
            if s.limits.budget_usd is not None:
                windows, window = self._windows(s.ref), window_of(s.limits.budget_period, now)
                windows[window] = windows.get(window, 0) + amount_nano
        return RESERVED

    async def settle(self, scopes: list[Scope], reserved_nano: int, actual_nano: int, now: float,
                     thresholds: list[float]) -> list[tuple[str, str, float]]:
        crossed: list[tuple[str, str, float]] = []
        for s in scopes:
            if s.limits.budget_usd is None:
                continue
            windows, window = self._windows(s.ref), window_of(s.limits.budget_period, now)
            spent = windows[window] = windows.get(window, 0) + actual_nano - reserved_nano
            limit = s.budget_nano
            if limit <= 0 or not thresholds or spent < min(thresholds) * limit:
                continue
            for t in thresholds:
                mark = (s.ref, window, t)
                if spent >= t * limit and mark not in self._alerted:
                    self._alerted.add(mark)
                    crossed.append(mark)
        return crossed

    async def seed(self, spent: dict[tuple[str, str, str], int]) -> None:
        """Start from the ledger's totals (after a restart); counters already live win."""
        for (kind, ident, window), nano in spent.items():
            self._windows(f"{kind}:{ident}").setdefault(window, nano)

    async def spent(self, scope: Scope, now: float) -> int:
        return self._windows(scope.ref).get(window_of(scope.limits.budget_period, now), 0)


RESERVED = Reservation(allowed=True)  # shared: an accepted reservation carries nothing else


class MemoryGate:
    """Rate limits, then the budget reservation, as one step (nothing awaits in between)."""

    def __init__(self, limiter: MemoryRateLimiter, budgets: MemoryBudgets) -> None:
        self.limiter = limiter
        self.budgets = budgets

    async def enter(self, rate: list[Scope], request_id: str, est_tokens: int, budget: list[Scope],
                    amount_nano: int, now: float) -> tuple[Admission, Reservation | None]:
        admission = await self.limiter.admit(rate, request_id, est_tokens) if rate else Admission(allowed=True)
        if not admission.allowed or not budget:
            return admission, None
        return admission, await self.budgets.reserve(budget, amount_nano, now)

    async def leave(self, rate: list[Scope], request_id: str, token_delta: int, budget: list[Scope],
                    reserved_nano: int, actual_nano: int, now: float,
                    thresholds: list[float]) -> list[tuple[str, str, float]]:
        if rate:
            await self.limiter.release(rate, request_id, token_delta)
        if not budget:
            return []
        return await self.budgets.settle(budget, reserved_nano, actual_nano, now, thresholds)


class MemoryKeyVersion:
    """A key-change counter for one process (the SQLite database holds the shared one)."""

    def __init__(self) -> None:
        self._v = 0

    async def get(self) -> int:
        return self._v

    async def bump(self) -> int:
        self._v += 1
        return self._v
