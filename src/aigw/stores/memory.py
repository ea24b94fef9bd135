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

from aigw.ids import unique_id
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

    async def release(self, scopes: list[Scope], slot: str, token_delta: int, taken_at: int = 0) -> None:
        self.give_back(scopes, slot, token_delta, taken_at, self._clock.now())

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
                    return _refuse(scope, "rpm", req.wait_s(now, req.total, 1, rpm),
                                   _figures(rpm, req.total, tpm, tok.used(sec) if tpm else 0, est_tokens))
            if tpm:
                buckets = tok.buckets
                if buckets and buckets[0][0] <= cutoff:
                    tok.used(sec)
                if tok.total + est_tokens > tpm:
                    return _refuse(scope, "tpm", tok.wait_s(now, tok.total, est_tokens, tpm),
                                   _figures(rpm, req.total, tpm, tok.total, est_tokens))
            if parallel and len(inflight) >= parallel:
                for rid in [r for r, exp in inflight.items() if exp <= now]:  # slots of lost calls
                    del inflight[rid]
                if len(inflight) >= parallel:
                    return _refuse(scope, "parallel", 1.0, _figures(rpm, req.total, tpm, tok.total, est_tokens))
        expires = now + self._ttl
        for _, rpm, tpm, parallel, req, tok, inflight in levels:  # take: _Window.add, inlined
            if rpm:
                buckets = req.buckets
                if buckets and buckets[-1][0] == sec:
                    buckets[-1][1] += 1
                else:
                    buckets.append([sec, 1])
                req.total += 1
            if tpm and est_tokens:
                buckets = tok.buckets
                if buckets and buckets[-1][0] == sec:
                    buckets[-1][1] += est_tokens
                else:
                    buckets.append([sec, est_tokens])
                tok.total += est_tokens
            if parallel:
                inflight[slot] = expires
        if not levels:
            return Admission(allowed=True, taken_at=sec)
        _, rpm, tpm, _, req, tok, _ = levels[0]  # the key's figures, now that this call is counted
        return Admission(allowed=True, limit_requests=rpm or None,
                         remaining_requests=rpm - req.total if rpm > req.total else 0 if rpm else None,
                         limit_tokens=tpm or None,
                         remaining_tokens=tpm - tok.total if tpm > tok.total else 0 if tpm else None,
                         # when the oldest request counted leaves the window: one more fits from then on
                         reset_requests_s=req.buckets[0][0] + WINDOW_S - now if rpm else 0.0,
                         taken_at=sec)

    def give_back(self, scopes: list[Scope], slot: str, token_delta: int, taken_at: int, now: float) -> None:
        """Settle the token estimate to the real count and free the parallel slot."""
        sec = int(now)
        for _, _, tpm, _, _, tok, inflight in self._levels(scopes):
            if token_delta and tpm:
                if token_delta > 0:
                    tok.add(sec, token_delta)  # used beyond the estimate: used now
                else:
                    tok.refund(taken_at, -token_delta)
            if inflight:
                inflight.pop(slot, None)


# One scope resolved for the hot path: (scope, rpm, tpm, max parallel, requests, tokens, in flight).
_Level = tuple[Scope, int, int, int, _Window, _Window, dict[str, float]]


def _figures(rpm: int, used_requests: int, tpm: int, used_tokens: int,
             est_tokens: int) -> tuple[int | None, int | None, int | None, int | None]:
    """What the refusing scope reports in ``x-ratelimit-*`` (nothing was taken)."""
    return (rpm or None, max(0, rpm - used_requests - 1) if rpm else None,
            tpm or None, max(0, tpm - used_tokens - est_tokens) if tpm else None)


def _refuse(scope: Scope, reason: str, wait_s: float,
            head: tuple[int | None, int | None, int | None, int | None]) -> Admission:
    return Admission(allowed=False, scope=scope.ref, reason=reason, retry_after_s=wait_s, reset_requests_s=wait_s,
                     limit_requests=head[0], remaining_requests=head[1], limit_tokens=head[2],
                     remaining_tokens=head[3])


EXPIRED = -1  # a lease's amount once it has expired: it counts no more, and a late settle counts its cost
_NEVER = float("inf")


class _Spend:
    """One scope's budget window: what settled calls cost, and the calls in flight as leases.

    A lease is one call's reservation (by its slot) until the call is settled or the lease expires.
    An expired lease stops counting (its call's reply was lost, or its replica died) and leaves a
    marker for one more lease TTL, so that a settle arriving late still counts the call's cost, once.
    """

    __slots__ = ("leases", "next_expiry", "reserved", "settled")

    def __init__(self) -> None:
        self.settled = 0
        self.reserved = 0  # the leases' amounts, expired ones too until ``expire`` drops them
        self.leases: dict[str, tuple[float, int]] = {}  # slot -> (expiry, amount or EXPIRED), oldest first
        self.next_expiry = _NEVER  # no lease expires before this

    def expire(self, now: float, ttl: float) -> None:
        """Stop counting the leases past their expiry and drop the markers past theirs. Leases are kept
        in the order they were taken, which with one TTL is their order of expiry: the walk stops at the
        first live one, so it visits the expired ones (and slots settled in between) only. (A clock that
        steps back delays a drop by as much.)"""
        leases = self.leases
        dead: list[tuple[str, int]] = []
        nxt = _NEVER
        for slot, (expiry, amount) in leases.items():
            if expiry > now:
                nxt = expiry
                break
            dead.append((slot, amount))
        for slot, amount in dead:
            del leases[slot]
            if amount != EXPIRED:
                self.reserved -= amount
                leases[slot] = (now + ttl, EXPIRED)  # at the end: the latest expiry
        self.next_expiry = nxt if nxt != _NEVER or not leases else now + ttl  # else only the new markers are left


class MemoryBudgets:
    """Spend per scope and budget window in nano-dollars: reserve (a lease per call), then settle.

    Admission counts settled spend plus the live leases. A lease expires ``lease_ttl_s`` after its
    reservation (the request timeout and a margin: no call it covers is still running), so a
    reservation that is never settled stops counting instead of holding its budget all window.
    """

    def __init__(self, lease_ttl_s: float = 900.0) -> None:
        self._ttl = lease_ttl_s
        self._windows: dict[tuple[str, str], _Spend] = {}  # (scope ref, window) -> its spend and leases
        self._alerted: set[tuple[str, str, float]] = set()

    async def reserve(self, scopes: list[Scope], amount_nano: int, now: float, slot: str = "") -> Reservation:
        return self.reserve_now(scopes, amount_nano, now, slot or unique_id("slot_"))

    async def settle(self, scopes: list[Scope], reserved_nano: int, actual_nano: int, now: float,
                     thresholds: list[float], slot: str) -> list[tuple[str, str, float]]:
        return self.settle_now(scopes, slot, reserved_nano, actual_nano, now, thresholds)

    def _window(self, ref: str, window: str) -> _Spend:
        st = self._windows.get((ref, window))
        if st is None:
            st = self._windows[(ref, window)] = _Spend()
        return st

    def reserve_now(self, scopes: list[Scope], amount_nano: int, now: float, slot: str) -> Reservation:
        taken: list[_Spend] = []
        windows = self._windows
        for s in scopes:
            lim = s.limits
            if lim.budget_usd is None:
                continue
            key = (s.ref, window_of(lim.budget_period, now))
            st = windows.get(key)
            if st is None:
                st = windows[key] = _Spend()
            if now >= st.next_expiry:
                st.expire(now, self._ttl)
            used = st.settled + st.reserved
            if used + amount_nano > s.budget_nano:
                return Reservation(allowed=False, scope=s.ref, limit_nano=s.budget_nano, spent_nano=used)
            taken.append(st)
        expiry = now + self._ttl
        for st in taken:
            st.leases[slot] = (expiry, amount_nano)
            st.reserved += amount_nano
            if expiry < st.next_expiry:
                st.next_expiry = expiry
        return RESERVED

    def settle_now(self, scopes: list[Scope], slot: str, reserved_nano: int, actual_nano: int, now: float,
                   thresholds: list[float]) -> list[tuple[str, str, float]]:
        """Replace the call's lease (its slot and amount) by its real cost, in the window of ``now`` (when
        it was reserved). Only a lease still there (live or expired) is settled: twice changes nothing."""
        crossed: list[tuple[str, str, float]] = []
        lowest = min(thresholds) if thresholds else 0.0
        for s in scopes:
            lim = s.limits
            if lim.budget_usd is None:
                continue
            window = window_of(lim.budget_period, now)
            st = self._windows.get((s.ref, window))
            if st is None:
                continue
            lease = st.leases.get(slot)
            if lease is None:  # settled already
                continue
            if lease[1] == reserved_nano:
                st.reserved -= reserved_nano
            elif lease[1] != EXPIRED:  # not this call's lease
                continue
            del st.leases[slot]
            before = st.settled
            after = st.settled = before + actual_nano
            limit = s.budget_nano
            if limit <= 0 or not thresholds or after < lowest * limit:
                continue
            for t in thresholds:  # on the real spend crossing it: other calls' reservations are not spend
                mark = (s.ref, window, t)
                if before < t * limit <= after and mark not in self._alerted:
                    self._alerted.add(mark)
                    crossed.append(mark)
        return crossed

    async def seed(self, spent: dict[tuple[str, str, str], int]) -> None:
        """Raise settled spend to the ledger's totals (a restart, a budget added or changed mid-window):
        the higher figure wins, so spend made while no budget counted it is in, and thresholds passed
        before do not alert again. Leases are not in the ledger: they stay as they are."""
        for (kind, ident, window), nano in spent.items():
            st = self._window(f"{kind}:{ident}", window)
            if st.settled < nano:
                st.settled = nano

    async def seeded(self) -> bool:
        return True  # process memory is not lost while the process lives

    async def spent(self, scope: Scope, now: float) -> int:
        """Settled spend plus the live leases, in the window of ``now``."""
        st = self._windows.get((scope.ref, window_of(scope.limits.budget_period, now)))
        if st is None:
            return 0
        if now >= st.next_expiry:
            st.expire(now, self._ttl)
        return st.settled + st.reserved


RESERVED = Reservation(allowed=True)  # shared: an accepted reservation carries nothing else


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

    async def leave(self, rate: list[Scope], slot: str, token_delta: int, taken_at: int, budget: list[Scope],
                    reserved_nano: int, actual_nano: int, entered: float,
                    thresholds: list[float]) -> list[tuple[str, str, float]]:
        if rate:
            self.limiter.give_back(rate, slot, token_delta, taken_at, self.limiter.now())
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
