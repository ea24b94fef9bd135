"""Hot state in Redis: rate limits, budgets and the key version, shared by every replica.

Before a call, rate limits and the budget reservation are one Lua step
(``enter.lua``: atomic on the server, timed by the server's clock); after it,
releasing and settling are another (``leave.lua``). So N replicas enforce one
limit, not N of them. The steps that concurrent requests issue in the same loop
turn travel together in one script call (``batch_source``), which keeps the
client's cost per request low under load. Scripts are called by SHA; redis-py
reloads them after a Redis restart.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from aigw.stores.base import Admission, Reservation, Scope, window_of

_TTL_BY_PERIOD = {"daily": 3 * 86400, "weekly": 15 * 86400, "monthly": 40 * 86400, "total": 0}


def _source(name: str) -> str:
    return resources.files("aigw.stores.redis").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def _script(redis: Any, name: str) -> Any:
    return redis.register_script(_source(name))


def batch_source() -> str:
    """One script running many enter/leave steps, built from enter.lua and leave.lua themselves.

    ARGV[1] = number of steps; then per step: kind ('e' | 'l'), key count, argument count and
    its arguments; KEYS holds every step's keys in order. One reply per step, exactly as the
    single-step script would have answered (each step runs as that script, atomically, in order).
    """
    def as_function(name: str, fn: str) -> str:
        body = [ln for ln in _source(name).splitlines() if not ln.startswith("--")]
        text = "\n".join("  " + ln if ln else ln for ln in body).replace("KEYS", "K").replace("ARGV", "A")
        return f"local function {fn}(K, A)\n{text}\nend\n"

    return (as_function("enter", "enter") + as_function("leave", "leave") + """
local out = {}
local kpos, apos = 1, 2
for step = 1, tonumber(ARGV[1]) do
  local kind, nk, na = ARGV[apos], tonumber(ARGV[apos + 1]), tonumber(ARGV[apos + 2])
  apos = apos + 3
  local K, A = {}, {}
  for i = 1, nk do K[i] = KEYS[kpos + i - 1] end
  for i = 1, na do A[i] = ARGV[apos + i - 1] end
  kpos, apos = kpos + nk, apos + na
  if kind == 'e' then out[step] = enter(K, A) else out[step] = leave(K, A) end
end
return out
""")


class _Batcher:
    """Runs the gate steps that concurrent requests issue in the same loop turn as one script call.

    The first step of a batch yields once (so that steps issued in this turn join it), then
    sends them all; a step waits for its own reply only. Under load this divides the Redis
    round trips (and the client's CPU per call, the larger cost) by the batch size; alone,
    a step costs what the single call did.
    """

    def __init__(self, script: Any) -> None:
        self._script = script
        self._steps: list[tuple[str, list[str], list[Any], asyncio.Future[Any]]] = []

    async def run(self, kind: str, keys: list[str], args: list[Any]) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._steps.append((kind, keys, args, fut))
        if len(self._steps) == 1:  # this step opens the batch: gather the turn's others, then send
            await asyncio.sleep(0)
            steps, self._steps = self._steps, []
            await self._send(steps)
        return await fut

    async def _send(self, steps: list[tuple[str, list[str], list[Any], asyncio.Future[Any]]]) -> None:
        keys: list[str] = []
        args: list[Any] = [len(steps)]
        for kind, k, a, _ in steps:
            keys += k
            args += [kind, len(k), len(a), *a]
        try:
            replies = await self._script(keys=keys, args=args)
        except BaseException as exc:
            for *_, fut in steps:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else ConnectionError("cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        for (*_, fut), reply in zip(steps, replies, strict=True):
            if not fut.done():
                fut.set_result(reply)


def _int(v: Any) -> int | None:
    n = int(v)
    return None if n < 0 else n


class RedisCounters:
    """Rate limits and budgets in Redis; ``enter``/``leave`` do both in one call each."""

    def __init__(self, redis: Any, prefix: str, parallel_ttl_s: float = 900.0) -> None:
        self._redis = redis
        self._rl = prefix + "rl:"
        self._bg = prefix + "bg:"
        self._ttl = parallel_ttl_s
        self._batch = _Batcher(redis.register_script(batch_source()))
        self._seed = _script(redis, "seed")

    def _rate_keys(self, scope: Scope) -> tuple[str, str, str]:
        base = self._rl + scope.ref
        return base + ":r", base + ":t", base + ":p"

    def _budget_key(self, ref: str, window: str) -> str:
        return f"{self._bg}{ref}:{window}"

    def _budgeted(self, scopes: list[Scope], now: float) -> list[tuple[Scope, str, str]]:
        out = []
        for s in scopes:
            if s.limits.budget_usd is not None:
                window = window_of(s.limits.budget_period, now)
                out.append((s, window, self._budget_key(s.ref, window)))
        return out

    async def enter(self, rate: list[Scope], request_id: str, est_tokens: int, budget: list[Scope],
                    amount_nano: int, now: float) -> tuple[Admission, Reservation | None]:
        items = self._budgeted(budget, now)
        keys: list[str] = []
        args: list[Any] = [request_id, est_tokens, self._ttl, len(rate)]
        for s in rate:
            keys.extend(self._rate_keys(s))
            args += [s.limits.rpm or 0, s.limits.tpm or 0, s.limits.max_parallel or 0]
        args.append(amount_nano)
        for s, _, key in items:
            keys.append(key)
            args += [s.budget_nano, _TTL_BY_PERIOD[s.limits.budget_period]]
        out = await self._batch.run("e", keys, args)
        code = int(out[0])
        if code == 0:
            wait = float(out[3])
            reason = out[2].decode() if isinstance(out[2], bytes) else str(out[2])
            return Admission(allowed=False, scope=rate[int(out[1])].ref, reason=reason, retry_after_s=wait,
                             reset_requests_s=wait, limit_requests=_int(out[4]), remaining_requests=_int(out[5]),
                             limit_tokens=_int(out[6]), remaining_tokens=_int(out[7])), None
        head = out[1:5] if code == 1 else out[4:8]
        admission = Admission(allowed=True, limit_requests=_int(head[0]), remaining_requests=_int(head[1]),
                              limit_tokens=_int(head[2]), remaining_tokens=_int(head[3]))
        if not items:
            return admission, None
        if code == 1:
            return admission, Reservation(allowed=True)
        return admission, Reservation(allowed=False, scope=items[int(out[1])][0].ref,
                                      limit_nano=int(float(out[2])), spent_nano=int(float(out[3])))

    async def leave(self, rate: list[Scope], request_id: str, token_delta: int, budget: list[Scope],
                    reserved_nano: int, actual_nano: int, now: float,
                    thresholds: list[float]) -> list[tuple[str, str, float]]:
        items = self._budgeted(budget, now)
        keys: list[str] = []
        args: list[Any] = [request_id, token_delta, len(rate)]
        for s in rate:
            _, kt, kp = self._rate_keys(s)
            keys += [kt, kp]
            args.append(s.limits.tpm or 0)
        args += [actual_nano - reserved_nano, len(thresholds), *[repr(t) for t in thresholds]]
        for s, _, key in items:
            keys.append(key)
            args += [s.budget_nano, _TTL_BY_PERIOD[s.limits.budget_period]]
        out = await self._batch.run("l", keys, args)
        crossed = []
        for raw in out:
            idx, _, th = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition(":")
            scope, window, _ = items[int(idx)]
            crossed.append((scope.ref, window, float(th)))
        return crossed

    # -- the single-purpose protocols, as special cases ----------------------------------
    async def admit(self, scopes: list[Scope], request_id: str, est_tokens: int) -> Admission:
        return (await self.enter(scopes, request_id, est_tokens, [], 0, 0.0))[0]

    async def release(self, scopes: list[Scope], request_id: str, token_delta: int) -> None:
        await self.leave(scopes, request_id, token_delta, [], 0, 0, 0.0, [])

    async def reserve(self, scopes: list[Scope], amount_nano: int, now: float) -> Reservation:
        return (await self.enter([], "", 0, scopes, amount_nano, now))[1] or Reservation(allowed=True)

    async def settle(self, scopes: list[Scope], reserved_nano: int, actual_nano: int, now: float,
                     thresholds: list[float]) -> list[tuple[str, str, float]]:
        return await self.leave([], "", 0, scopes, reserved_nano, actual_nano, now, thresholds)

    async def seed(self, spent: dict[tuple[str, str, str], int]) -> None:
        if not spent:
            return
        keys: list[str] = []
        args: list[Any] = []
        for (kind, ident, window), nano in spent.items():
            keys.append(self._budget_key(f"{kind}:{ident}", window))
            period = "total" if window == "total" else ("weekly" if "-W" in window else
                                                        ("daily" if window.count("-") == 2 else "monthly"))
            args += [nano, _TTL_BY_PERIOD[period]]
        await self._seed(keys=keys, args=args)

    async def spent(self, scope: Scope, now: float) -> int:
        raw = await self._redis.get(self._budget_key(scope.ref, window_of(scope.limits.budget_period, now)))
        return int(raw or 0)


class RedisKeyVersion:
    def __init__(self, redis: Any, prefix: str) -> None:
        self._redis = redis
        self._key = prefix + "keys:version"

    async def get(self) -> int:
        return int(await self._redis.get(self._key) or 0)

    async def bump(self) -> int:
        return int(await self._redis.incr(self._key))
