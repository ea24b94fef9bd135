"""Hot state in Redis: rate limits, budgets and the key version, shared by every replica.

Each check is one Lua script call (one round trip, atomic on the server, timed by
the server's clock), so N replicas enforce one limit, not N of them. Scripts are
loaded from ``lua/`` and called by SHA; redis-py reloads them after a Redis restart.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from aigw.stores.base import Admission, Reservation, Scope, window_of

_TTL_BY_PERIOD = {"daily": 3 * 86400, "weekly": 15 * 86400, "monthly": 40 * 86400, "total": 0}


def _script(redis: Any, name: str) -> Any:
    text = resources.files("aigw.stores.redis").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    return redis.register_script(text)


def _int(v: Any) -> int | None:
    n = int(v)
    return None if n < 0 else n


class RedisRateLimiter:
    def __init__(self, redis: Any, prefix: str, parallel_ttl_s: float = 900.0) -> None:
        self._prefix = prefix + "rl:"
        self._ttl = parallel_ttl_s
        self._admit = _script(redis, "admit")
        self._release = _script(redis, "release")

    def _keys(self, scope: Scope) -> tuple[str, str, str]:
        base = self._prefix + scope.ref
        return base + ":r", base + ":t", base + ":p"

    async def admit(self, scopes: list[Scope], request_id: str, est_tokens: int) -> Admission:
        keys: list[str] = []
        args: list[Any] = [request_id, est_tokens, self._ttl]
        for s in scopes:
            keys.extend(self._keys(s))
            args += [s.limits.rpm or 0, s.limits.tpm or 0, s.limits.max_parallel or 0]
        out = await self._admit(keys=keys, args=args)
        if int(out[0]) == 1:
            return Admission(allowed=True, limit_requests=_int(out[1]), remaining_requests=_int(out[2]),
                             limit_tokens=_int(out[3]), remaining_tokens=_int(out[4]))
        wait = float(out[3])
        reason = out[2].decode() if isinstance(out[2], bytes) else str(out[2])
        return Admission(allowed=False, scope=scopes[int(out[1])].ref, reason=reason, retry_after_s=wait,
                         reset_requests_s=wait, limit_requests=_int(out[4]), remaining_requests=_int(out[5]),
                         limit_tokens=_int(out[6]), remaining_tokens=_int(out[7]))

    async def release(self, scopes: list[Scope], request_id: str, token_delta: int) -> None:
        keys: list[str] = []
        args: list[Any] = [request_id, token_delta]
        for s in scopes:
            _, kt, kp = self._keys(s)
            keys += [kt, kp]
            args.append(s.limits.tpm or 0)
        await self._release(keys=keys, args=args)


class RedisBudgets:
    def __init__(self, redis: Any, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix + "bg:"
        self._reserve = _script(redis, "reserve")
        self._settle = _script(redis, "settle")
        self._seed = _script(redis, "seed")

    def _key(self, ref: str, window: str) -> str:
        return f"{self._prefix}{ref}:{window}"

    def _budgeted(self, scopes: list[Scope], now: float) -> list[tuple[Scope, str, str]]:
        out = []
        for s in scopes:
            if s.limits.budget_usd is not None:
                window = window_of(s.limits.budget_period, now)
                out.append((s, window, self._key(s.ref, window)))
        return out

    async def reserve(self, scopes: list[Scope], amount_nano: int, now: float) -> Reservation:
        items = self._budgeted(scopes, now)
        if not items:
            return Reservation(allowed=True)
        args: list[Any] = [amount_nano]
        for s, _, _ in items:
            args += [s.budget_nano, _TTL_BY_PERIOD[s.limits.budget_period]]
        out = await self._reserve(keys=[k for _, _, k in items], args=args)
        if int(out[0]) == 1:
            return Reservation(allowed=True)
        return Reservation(allowed=False, scope=items[int(out[1])][0].ref, limit_nano=int(float(out[2])),
                           spent_nano=int(float(out[3])))

    async def settle(self, scopes: list[Scope], reserved_nano: int, actual_nano: int, now: float,
                     thresholds: list[float]) -> list[tuple[str, str, float]]:
        items = self._budgeted(scopes, now)
        if not items:
            return []
        args: list[Any] = [actual_nano - reserved_nano, len(thresholds), *[repr(t) for t in thresholds]]
        for s, _, _ in items:
            args += [s.budget_nano, _TTL_BY_PERIOD[s.limits.budget_period]]
        out = await self._settle(keys=[k for _, _, k in items], args=args)
        crossed = []
        for raw in out:
            idx, _, th = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition(":")
            scope, window, _ = items[int(idx)]
            crossed.append((scope.ref, window, float(th)))
        return crossed

    async def seed(self, spent: dict[tuple[str, str, str], int]) -> None:
        if not spent:
            return
        keys: list[str] = []
        args: list[Any] = []
        for (kind, ident, window), nano in spent.items():
            keys.append(self._key(f"{kind}:{ident}", window))
            period = "total" if window == "total" else ("weekly" if "-W" in window else
                                                        ("daily" if window.count("-") == 2 else "monthly"))
            args += [nano, _TTL_BY_PERIOD[period]]
        await self._seed(keys=keys, args=args)

    async def spent(self, scope: Scope, now: float) -> int:
        raw = await self._redis.get(self._key(scope.ref, window_of(scope.limits.budget_period, now)))
        return int(raw or 0)


class RedisKeyVersion:
    def __init__(self, redis: Any, prefix: str) -> None:
        self._redis = redis
        self._key = prefix + "keys:version"

    async def get(self) -> int:
        return int(await self._redis.get(self._key) or 0)

    async def bump(self) -> int:
        return int(await self._redis.incr(self._key))
