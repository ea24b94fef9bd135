"""Budget counters in process memory: settled spend and reservations as leases, per scope and window.

The embedded twin of the budget half of ``stores/redis/`` (``lua/enter.lua``, ``leave.lua``): the same
rules and answers for one process. A reservation is a lease on the call's slot that expires, so one whose
settle never comes (a task that died) stops counting after the lease TTL.
"""

from __future__ import annotations

from aigw.ids import unique_id
from aigw.stores.base import PERIODS, Reservation, Scope, window_of

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
        self._alerted: set[tuple[str, str, int, float]] = set()  # (scope ref, window, budget, threshold)
        self._armed: set[tuple[str, str, int]] = set()  # (scope ref, window, budget) changed mid-window: ``reached``
        self._day = -1  # the UTC day of the last reservation: past windows are dropped when it changes

    async def reserve(self, scopes: list[Scope], amount_nano: int, now: float, slot: str = "") -> Reservation:
        return self.reserve_now(scopes, amount_nano, now, slot or unique_id("slot_"))

    async def settle(self, scopes: list[Scope], reserved_nano: int, actual_nano: int, now: float,
                     thresholds: list[float], slot: str) -> list[tuple[str, str, float]]:
        return self.settle_now(scopes, slot, reserved_nano, actual_nano, now, thresholds)

    async def forget(self, scope: Scope, now: float) -> None:
        """A settle still to come finds no window and changes nothing (``settle_now``)."""
        self._windows.pop((scope.ref, window_of(scope.limits.budget_period, now)), None)

    def _window(self, ref: str, window: str) -> _Spend:
        st = self._windows.get((ref, window))
        if st is None:
            st = self._windows[(ref, window)] = _Spend()
        return st

    def _drop_past(self, now: float) -> None:
        """Forget the windows that ended before yesterday, with their alert marks (yesterday's stays: a call
        reserved before midnight is settled in it). Run once a day: without it every scope kept one entry
        per window it ever had, for as long as the process lived."""
        keep = {window_of(period, t) for period in PERIODS for t in (now, now - 86400)}
        windows = self._windows
        for key in [k for k in windows if k[1] not in keep]:
            del windows[key]
        self._alerted = {m for m in self._alerted if m[1] in keep}
        self._armed = {m for m in self._armed if m[1] in keep}

    def reserve_now(self, scopes: list[Scope], amount_nano: int, now: float, slot: str) -> Reservation:
        if (day := int(now // 86400)) > self._day:  # not on a clock stepped back: today's window stays
            self._day = day
            self._drop_past(now)
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
                # marked per budget amount: a budget changed mid-window alerts at its own thresholds; once
                # changed (``reached``), at any it has reached unmarked (calls under the old amount passed it)
                mark = (s.ref, window, limit, t)
                if t * limit <= after and mark not in self._alerted and (
                        before < t * limit or (s.ref, window, limit) in self._armed):
                    self._alerted.add(mark)
                    crossed.append((s.ref, window, t))
        return crossed

    def expire_now(self, scopes: list[Scope], slot: str, amount_nano: int, reserved_at: float, now: float) -> None:
        """The call's lease (its slot and amount, reserved at ``reserved_at``) stops counting now, as at its
        expiry: its worker died, so no settle is coming. The marker it leaves lets a settle that comes all the
        same count the call's cost, once (``settle_now``)."""
        for s in scopes:
            if s.limits.budget_usd is None:
                continue
            st = self._windows.get((s.ref, window_of(s.limits.budget_period, reserved_at)))
            lease = st.leases.get(slot) if st is not None else None
            if st is None or lease is None or lease[1] != amount_nano:  # settled, expired, or not this call's
                continue
            del st.leases[slot]  # the marker goes last: leases stay in their order of expiry
            st.reserved -= amount_nano
            st.leases[slot] = (now + self._ttl, EXPIRED)
            st.next_expiry = min(st.next_expiry, now + self._ttl)

    async def reached(self, scope: Scope, now: float, thresholds: list[float]) -> list[float]:
        """The thresholds the window's settled spend has reached for ``scope``'s budget amount and not
        alerted yet: marked now, to alert. Arms the window, so that later settles alert the ones reached
        meanwhile by calls still settling under the old amount."""
        limit = scope.budget_nano
        if scope.limits.budget_usd is None or limit <= 0:
            return []
        window = window_of(scope.limits.budget_period, now)
        self._armed.add((scope.ref, window, limit))
        st = self._windows.get((scope.ref, window))
        settled = st.settled if st is not None else 0
        out = []
        for t in sorted(thresholds):
            mark = (scope.ref, window, limit, t)
            if settled >= t * limit and mark not in self._alerted:
                self._alerted.add(mark)
                out.append(t)
        return out

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
