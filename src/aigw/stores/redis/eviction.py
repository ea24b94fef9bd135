"""Whether the Redis holding limits and budgets may evict their keys under memory pressure, and whether the
cache's own Redis may not.

``warn_if_evicting`` is asked of ``redis_url`` only (``tenancy.py``), never of the cache's own Redis
(``cache.redis_url``): that one should evict. ``warn_if_cache_refuses`` is asked of the cache's own Redis
(``app.py``), the opposite case: ``noeviction`` with ``maxmemory`` set refuses every store once full (the
cache then skips its stores, ``stores/failures.py``). When that Redis is the counters' server after all (the
same ``run_id``: another database number, another name for the host) it says nothing: there the counters
need ``noeviction``.

With ``maxmemory`` set and a policy other than ``noeviction`` (``allkeys-*``, or ``volatile-*``: the
budget counters, rate windows, leases and alert marks all carry a TTL), Redis drops keys when full. An
evicted settled-spend counter starts again from zero, and nothing tells: the ``bg-seeded`` mark, read
twice a second, is the last key an LRU would pick. So a budget can be overrun by what the window had
spent. Start-up says so once, as Sidekiq does; a Redis that refuses ``CONFIG`` (managed services often
do) is not asked again and nothing is said above debug.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("aigw.tenancy")
cache_log = logging.getLogger("aigw.cache")
SAFE_POLICY = "noeviction"
CACHE_POLICY = "allkeys-lru"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def eviction_policy(redis: Any, timeout_s: float = 0.5, logger: logging.Logger = log
                          ) -> tuple[str, int] | None:
    """(maxmemory-policy, maxmemory in bytes), or None when Redis does not tell (``CONFIG`` refused, renamed,
    or no answer in ``timeout_s``; a debug line on ``logger`` says so)."""
    try:
        async with asyncio.timeout(timeout_s):
            reply = await redis.config_get("maxmemory*")
    except Exception as exc:
        logger.debug("Redis eviction policy not checked: CONFIG GET failed (%s: %s)", type(exc).__name__, exc)
        return None
    found = {_text(k): _text(v) for k, v in dict(reply).items()}
    policy = found.get("maxmemory-policy")
    if policy is None:
        return None
    try:
        limit = int(found.get("maxmemory", "0"))
    except ValueError:
        limit = 0
    return policy, limit


def eviction_warning(policy: str, maxmemory: int) -> str | None:
    """The start-up line for a policy that may evict the gate's keys; None for ``noeviction``."""
    if policy == SAFE_POLICY:
        return None
    limit = f"maxmemory {maxmemory} bytes" if maxmemory else "no maxmemory yet"
    return (f"Redis (redis_url) has maxmemory-policy {policy} ({limit}): when full it may evict budget counters, "
            "rate-limit windows and leases, and an evicted budget counter restarts at zero, so the budget can be "
            "overrun (docs/tenancy.md, 'Redis memory'). Set maxmemory-policy noeviction on it, and give the response "
            "cache a Redis of its own (cache.redis_url, maxmemory-policy allkeys-lru) so that a full cache never "
            "fills this one")


async def warn_if_evicting(redis: Any) -> None:
    """Log ``eviction_warning`` once at start if it applies; never fails start-up."""
    found = await eviction_policy(redis)
    if found is not None and (line := eviction_warning(*found)) is not None:
        log.warning("%s", line)


def cache_full_warning(policy: str, maxmemory: int) -> str | None:
    """The start-up line for a cache Redis that refuses writes once full; None when it evicts or has no limit."""
    if policy != SAFE_POLICY or not maxmemory:
        return None
    return (f"the cache's Redis (cache.redis_url) has maxmemory-policy {policy} with maxmemory {maxmemory} bytes: "
            "once it is full it refuses every store, and the gateway stops storing answers (counted in "
            "aigw_store_full_total{store=\"cache_redis\"}). Set maxmemory-policy " + CACHE_POLICY + " on it "
            "(docs/cache.md, 'A Redis of its own')")


async def _run_id(redis: Any, timeout_s: float) -> str | None:
    try:
        async with asyncio.timeout(timeout_s):
            info = await redis.info("server")
    except Exception:
        return None
    return _text(info.get("run_id", "")) or None


async def warn_if_cache_refuses(cache_redis: Any, counters: Any = None, timeout_s: float = 0.5) -> None:
    """Log ``cache_full_warning`` once at start if it applies to ``cache_redis``, the cache's own Redis, unless
    it is the same server as ``counters`` (the ``redis_url`` one, if any); never fails start-up."""
    if counters is not None:
        mine = await _run_id(cache_redis, timeout_s)
        if mine is not None and mine == await _run_id(counters, timeout_s):
            return
    found = await eviction_policy(cache_redis, timeout_s, cache_log)
    if found is not None and (line := cache_full_warning(*found)) is not None:
        cache_log.warning("%s", line)
