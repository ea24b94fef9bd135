"""Hot state in Redis: rate limits, budgets and the key version, shared by every replica.

Before a call, rate limits and the budget reservation are one Lua step
(``enter.lua``: atomic on the server, timed by the server's clock); after it,
releasing and settling are another (``leave.lua``). So N replicas enforce one
limit, not N of them. The steps that concurrent requests issue in the same loop
turn travel together in one script call (``gate_batch``), which keeps the
client's cost per request low under load. Those calls go through the lean client
in ``pipe.py`` (keys and limits encoded once per scope), or redis-py for URLs it
does not speak. Scripts are called by SHA and reloaded after a Redis restart.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import Callable
from typing import Any

from aigw.ids import unique_id
from aigw.stores.base import Admission, Reservation, Scope, window_of
from aigw.stores.failures import SettleOwed, SettleUnanswered, StoreSkipped, unreachable
from aigw.stores.redis.alert_marks import AlertMarks, Crossing
from aigw.stores.redis.gate_batch import GateBatcher, lua_source
from aigw.stores.redis.later import after, then
from aigw.stores.redis.pipe import RedisPipe, ViaRedisPy, bulk, bulk_int

_TTL_BY_PERIOD = {"daily": 3 * 86400, "weekly": 15 * 86400, "monthly": 40 * 86400, "total": 0}
_PARTS = ("settled", "reserved", "leases")  # a budget window's keys: <prefix>bg:<scope ref>:<window>:<part>


def _script(redis: Any, name: str) -> Any:
    return redis.register_script(lua_source(name))


def _int(v: Any) -> int | None:
    n = int(v)
    return None if n < 0 else n


_ENTER, _LEAVE = bulk(b"e"), bulk(b"l")
_CACHE_MAX = 100_000  # encoded scopes kept (one entry per key, project and tenant in use)


class _Rate:
    """A rate scope's keys and limits as bulk strings, for enter and for leave."""

    __slots__ = ("enter_args", "enter_keys", "leave_args", "leave_keys", "scope")

    def __init__(self, scope: Scope, base: str) -> None:
        lim = scope.limits
        kr, kt, kp = (bulk(f"{base}{scope.ref}:{s}".encode()) for s in "rtp")
        self.scope = scope
        self.enter_keys = self.leave_keys = [kr, kt, kp]
        self.enter_args = [bulk_int(lim.rpm or 0), bulk_int(lim.tpm or 0), bulk_int(lim.max_parallel or 0)]
        self.leave_args = [bulk_int(lim.tpm or 0)]


class _Budget:
    """A budget scope's keys for one window (settled, reserved, leases; see enter.lua) and its limit
    and TTL, as bulk strings."""

    __slots__ = ("base", "keys", "leave_args", "limit", "scope", "view", "window")

    def __init__(self, scope: Scope, window: str, base: str) -> None:
        self.scope, self.window, self.base = scope, window, base
        self.keys = [bulk(f"{base}:{part}".encode()) for part in _PARTS]
        self.limit = [bulk_int(scope.budget_nano)]
        self.leave_args = [bulk_int(scope.budget_nano), bulk_int(_TTL_BY_PERIOD[scope.limits.budget_period])]
        armed = bulk(f"{base}:alert:{scope.budget_nano}:armed".encode())  # set when the budget changed (reached.lua)
        self.view: tuple[list[float], list[bytes]] = ([], [*self.keys, armed])  # thresholds -> leave's keys

    def marks(self, thresholds: list[float]) -> list[tuple[str, float]]:
        """(alert mark key, threshold) per threshold, as ``leave_keys`` names them."""
        return [(f"{self.base}:alert:{self.scope.budget_nano}:{t!r}", t) for t in thresholds]

    def leave_keys(self, thresholds: list[float]) -> list[bytes]:
        """The window's keys, then one alert mark per threshold (each fires once per window and budget
        amount: a budget changed mid-window alerts at its own thresholds, not at none)."""
        known, keys = self.view
        if thresholds != known:
            nano = self.scope.budget_nano
            keys = [*keys[:len(_PARTS) + 1], *(bulk(f"{self.base}:alert:{nano}:{t!r}".encode()) for t in thresholds)]
            self.view = (list(thresholds), keys)
        return keys


class RedisCounters:
    """Rate limits and budgets in Redis; ``enter``/``leave`` do both in one call each.

    The gate's script calls go through ``pipe`` (the lean client, ``pipe.py``) when given,
    else through redis-py; seeding and reading spend always use redis-py.
    """

    def __init__(self, redis: Any, prefix: str, parallel_ttl_s: float = 900.0,
                 pipe: RedisPipe | None = None, retry_after_s: float = 1.0,
                 report: Callable[[str, int], None] | None = None) -> None:
        """``parallel_ttl_s``: how long an in-flight slot and a budget lease live without their call's
        ``leave`` (the request timeout and a margin: a call past it is lost, not running).
        ``retry_after_s``: after a timeout or a lost connection, ``enter`` and ``leave`` raise
        ``StoreSkipped`` without trying Redis this long (``GateBatcher``; 0: always try); a ``leave`` skipped
        so raises ``SettleOwed`` and is sent when Redis answers again. ``report(outcome, n)``: owed settles
        counted (owed, replayed, dropped, failed)."""
        self._redis = redis
        self._rl = prefix + "rl:"
        self._bg = prefix + "bg:"
        self._seeded_key = prefix + "bg-seeded"  # gone with the counters when Redis loses its data
        self._epoch: bytes | None = None  # the mark as this replica last saw it (``_mark``)
        self._ttl = bulk(repr(float(parallel_ttl_s)).encode())
        self._lease_keep_s = math.ceil(2 * parallel_ttl_s) + 10  # as enter.lua keeps a window's lease keys
        self._batch = GateBatcher(pipe if pipe is not None else ViaRedisPy(redis), retry_after_s, report=report)
        # a settle sent and not answered may have run: the thresholds it crossed are read back from their marks
        self._marks = AlertMarks(redis, 2 * parallel_ttl_s)
        self._seed = _script(redis, "seed")
        self._spent = _script(redis, "spent")
        self._reached = _script(redis, "reached")
        self._peek = _script(redis, "peek")
        self._rates: dict[str, _Rate] = {}
        self._budgets: dict[str, _Budget] = {}
        self._thresholds: tuple[list[float], list[bytes]] = ([], [])

    def _rate(self, scope: Scope) -> _Rate:
        r = self._rates.get(scope.ref)
        if r is None or (r.scope is not scope and r.scope != scope):
            if len(self._rates) >= _CACHE_MAX:
                self._rates.clear()
            r = self._rates[scope.ref] = _Rate(scope, self._rl)
        return r

    def _budget_key(self, ref: str, window: str) -> str:
        """The window's keys start with this (then ``:settled``, ``:reserved``, ``:leases``)."""
        return f"{self._bg}{ref}:{window}"

    def _budgeted(self, scopes: list[Scope], now: float) -> list[_Budget]:
        out = []
        for s in scopes:
            if s.limits.budget_usd is not None:
                window = window_of(s.limits.budget_period, now)
                b = self._budgets.get(s.ref)
                if b is None or b.window != window or (b.scope is not s and b.scope != s):
                    if len(self._budgets) >= _CACHE_MAX:
                        self._budgets.clear()
                    b = self._budgets[s.ref] = _Budget(s, window, self._budget_key(s.ref, window))
                out.append(b)
        return out

    def _encoded_thresholds(self, thresholds: list[float]) -> list[bytes]:
        known, encoded = self._thresholds
        if thresholds != known:
            encoded = [bulk(repr(t).encode()) for t in thresholds]
            self._thresholds = (list(thresholds), encoded)
        return encoded

    async def enter(self, rate: list[Scope], slot: str, est_tokens: int, budget: list[Scope],
                    amount_nano: int, now: float) -> tuple[Admission, Reservation | None]:
        items = self._budgeted(budget, now)
        keys: list[bytes] = []
        args = [bulk(slot.encode()), bulk_int(est_tokens), self._ttl, bulk_int(len(rate))]
        for s in rate:
            r = self._rate(s)
            keys += r.enter_keys
            args += r.enter_args
        args.append(bulk_int(amount_nano))
        for b in items:
            keys += b.keys
            args += b.limit
        out = await self._batch.run(_ENTER, keys, args, slot)
        code = int(out[0])
        if code == 0:
            wait = float(out[3])
            reason = out[2].decode() if isinstance(out[2], bytes) else str(out[2])
            return Admission(allowed=False, scope=rate[int(out[1])].ref, reason=reason, retry_after_s=wait,
                             limit_requests=_int(out[4]), remaining_requests=_int(out[5]),
                             limit_tokens=_int(out[6]), remaining_tokens=_int(out[7]),
                             reset_requests_s=float(out[8]), reset_tokens_s=float(out[9])), None
        head = out[1:8] if code == 1 else out[4:11]
        admission = Admission(allowed=True, limit_requests=_int(head[0]), remaining_requests=_int(head[1]),
                              limit_tokens=_int(head[2]), remaining_tokens=_int(head[3]), taken_at=int(head[4]),
                              reset_requests_s=float(head[5]), reset_tokens_s=float(head[6]))
        if not items:
            return admission, None
        if code == 1:
            return admission, Reservation(allowed=True)
        return admission, Reservation(allowed=False, scope=items[int(out[1])].scope.ref,
                                      limit_nano=int(float(out[2])), spent_nano=int(float(out[3])))

    async def leave(self, rate: list[Scope], slot: str, token_delta: int, taken_at: int, budget: list[Scope],
                    reserved_nano: int, actual_nano: int, entered: float,
                    thresholds: list[float], request_back: bool = False) -> list[tuple[str, str, float]]:
        items = self._budgeted(budget, entered)  # the reservation's window, not the one the call ends in
        keys: list[bytes] = []
        args = [bulk(slot.encode()), bulk_int(token_delta), bulk_int(taken_at), bulk_int(int(request_back)),
                bulk_int(len(rate))]
        for s in rate:
            r = self._rate(s)
            keys += r.leave_keys
            args += r.leave_args
        args += (bulk_int(reserved_nano), bulk_int(actual_nano), bulk_int(len(thresholds)))
        args += self._encoded_thresholds(thresholds)
        for b in items:
            keys += b.leave_keys(thresholds)
            args += b.leave_args
        gone = self._batch.gone
        if gone and (entering := gone.get(slot)) is not None:  # after its enter, which a gone caller left on its way
            await asyncio.wait([entering])
        try:  # a leave never sent (skipped in an outage) runs once when Redis answers again: it is replayable
            out = await self._batch.run(_LEAVE, keys, args, replayable=True)
        except SettleOwed as owed:
            raise SettleOwed(str(owed), then(owed.later, lambda out: _crossed(out, items),
                                              lambda: self._read_marks(slot, items, thresholds))) from None
        except StoreSkipped:
            raise
        except Exception as exc:
            if not unreachable(exc):  # Redis refused it (the script's error): it did not run, nor would it again
                raise
            again = self._owe_again(keys, args, exc)  # not sent, or its answer lost: it may not have run
            if not (items and thresholds):  # alerts nothing
                raise
            # the thresholds it crossed, read back from their marks once its second sending ran (or was given up):
            # each mark holds the slot, whichever of the two set it
            raise SettleUnanswered(f"{type(exc).__name__}: {exc}",
                                   after(again, lambda: self._read_marks(slot, items, thresholds))) from exc
        return _crossed(out, items)

    def _owe_again(self, keys: list[bytes], args: list[bytes], exc: Exception) -> asyncio.Future[Any]:
        """A leave that failed on its way (never sent, or its answer lost) is owed as the part of it that counts
        once however often it runs (``leave.lua``): the parallel slot left, the budget lease settled to the real
        cost. Sent with the next step Redis answers; if the first did run, it changes nothing. Without it the
        call's cost never reached the settled spend (its lease expired instead), and a ``max_parallel`` slot
        stayed taken for the lease's life. The tokens' settling (and a refused call's request given back) are
        not repeated: they would count twice."""
        again = [args[0], bulk_int(0), args[2], bulk_int(0), *args[4:]]
        return self._batch.owed_settles.owe(_LEAVE, keys, again, exc).later

    async def peek(self, rate: list[Scope]) -> list[Admission]:
        """Each scope's figures as they stand (``peek.lua``, read only), through redis-py: the cold path."""
        keys: list[str] = []
        args: list[int] = []
        for s in rate:
            keys += (f"{self._rl}{s.ref}:r", f"{self._rl}{s.ref}:t")
            args += (s.limits.rpm or 0, s.limits.tpm or 0)
        out = await self._peek(keys=keys, args=args)
        return [Admission(allowed=False, limit_requests=_int(out[i]), remaining_requests=_int(out[i + 1]),
                          reset_requests_s=float(out[i + 2]), limit_tokens=_int(out[i + 3]),
                          remaining_tokens=_int(out[i + 4]), reset_tokens_s=float(out[i + 5]))
                for i in range(0, len(out), 6)]

    def _read_marks(self, slot: str, items: list[_Budget], thresholds: list[float]) -> asyncio.Future[list[Crossing]]:
        """The thresholds a settle whose answer was lost crossed, once Redis answers (``alert_marks``)."""
        return self._marks.read_later(slot, [(key, (b.scope.ref, b.window, t)) for b in items
                                             for key, t in b.marks(thresholds)])

    async def health(self) -> tuple[bool, str]:
        """Whether the gate uses Redis (False in a skip window or while its probe is out), and a line
        saying so (with the settles owed)."""
        return await self._batch.status()

    @property
    def owed(self) -> int:
        """Settles skipped in an outage, not sent yet."""
        return self._batch.owed

    async def close(self) -> None:
        """Shutdown: send the settles still owed if Redis answers soon; log those given up."""
        await self._batch.close()
        await self._marks.close()

    # -- the single-purpose protocols, as special cases ----------------------------------
    async def admit(self, scopes: list[Scope], slot: str, est_tokens: int) -> Admission:
        return (await self.enter(scopes, slot, est_tokens, [], 0, 0.0))[0]

    async def release(self, scopes: list[Scope], slot: str, token_delta: int, taken_at: int = 0,
                      request_back: bool = False) -> None:
        await self.leave(scopes, slot, token_delta, taken_at, [], 0, 0, 0.0, [], request_back)

    async def reserve(self, scopes: list[Scope], amount_nano: int, now: float, slot: str = "") -> Reservation:
        slot = slot or unique_id("slot_")
        return (await self.enter([], slot, 0, scopes, amount_nano, now))[1] or Reservation(allowed=True)

    async def settle(self, scopes: list[Scope], reserved_nano: int, actual_nano: int, now: float,
                     thresholds: list[float], slot: str) -> list[tuple[str, str, float]]:
        return await self.leave([], slot, 0, 0, scopes, reserved_nano, actual_nano, now, thresholds)

    async def seed(self, spent: dict[tuple[str, str, str], int]) -> None:
        """Raise the counters to the ledger's figures (``seed.lua``), then leave the mark ``seeded`` looks for."""
        if not spent:
            await self._mark()
            return
        keys: list[str] = []
        args: list[Any] = []
        for (kind, ident, window), nano in spent.items():
            keys.append(self._budget_key(f"{kind}:{ident}", window) + ":settled")
            period = "total" if window == "total" else ("weekly" if "-W" in window else
                                                        ("daily" if window.count("-") == 2 else "monthly"))
            args += [nano, _TTL_BY_PERIOD[period]]
        await self._seed(keys=keys, args=args)
        await self._mark()

    async def _mark(self) -> None:
        """Leave the mark ``seeded`` looks for: a new one where there was none (Redis lost its data), else the
        one there (another replica's start, a budget change: nothing was lost); remembered, to tell them apart."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self._seeded_key, unique_id("seed_"), nx=True)
            pipe.get(self._seeded_key)
            _, self._epoch = await pipe.execute()

    async def reached(self, scope: Scope, now: float, thresholds: list[float]) -> list[float]:
        """A changed budget's thresholds reached and not marked, marked now (``reached.lua``), through
        redis-py: an admin call, not the request path."""
        if scope.limits.budget_usd is None or not thresholds:
            return []
        base = self._budget_key(scope.ref, window_of(scope.limits.budget_period, now))
        ordered = sorted(thresholds)
        nano = scope.budget_nano  # the marks as ``_Budget.leave_keys`` names them
        keys = [f"{base}:settled", f"{base}:alert:{nano}:armed", *(f"{base}:alert:{nano}:{t!r}" for t in ordered)]
        out = await self._reached(keys=keys, args=[scope.budget_nano, _TTL_BY_PERIOD[scope.limits.budget_period],
                                                   *(repr(t) for t in ordered)])
        return [float(v) for v in out]

    async def forget(self, scope: Scope, now: float) -> None:
        """The window's keys expire once a call still in flight has had the time to settle (its lease's
        life), rather than at once: a settle that came after a delete would make the ``total`` counter again,
        without a TTL."""
        base = self._budget_key(scope.ref, window_of(scope.limits.budget_period, now))
        async with self._redis.pipeline(transaction=False) as pipe:
            for part in _PARTS:
                pipe.expire(f"{base}:{part}", self._lease_keep_s)
            await pipe.execute()

    async def seeded(self) -> bool:
        """False when Redis lost its data (no mark), and when it did and another replica seeded it again first
        (another mark than ours): the leases of this replica's calls in flight went with it either way."""
        mark = await self._redis.get(self._seeded_key)
        return mark is not None and mark == self._epoch

    async def spent(self, scope: Scope, now: float) -> int:
        base = self._budget_key(scope.ref, window_of(scope.limits.budget_period, now))
        return int(await self._spent(keys=[f"{base}:{part}" for part in _PARTS]))


def _crossed(out: Any, items: list[_Budget]) -> list[tuple[str, str, float]]:
    """leave.lua's reply ("budget index:threshold" per crossing) as (scope ref, window, threshold)."""
    crossed = []
    for raw in out:
        idx, _, th = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition(":")
        b = items[int(idx)]
        crossed.append((b.scope.ref, b.window, float(th)))
    return crossed


class RedisKeyVersion:
    """The key version in Redis. A counter that is missing (a Redis restarted without persistence, an eviction)
    starts again from a random number, not from 0: counting up from 0 again, a bump could land on the very
    number a replica saw before the loss, and that replica would keep the keys it holds (a revoked one too)
    until the next change."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self._redis = redis
        self._key = prefix + "keys:version"

    async def get(self) -> int:
        return int(await self._redis.get(self._key) or 0)

    async def bump(self) -> int:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key, secrets.randbits(52), nx=True)  # only when missing: a fresh start
            pipe.incr(self._key)
            _, value = await pipe.execute()
        return int(value)
