"""Whether the Redis holding limits and budgets may evict their keys under memory pressure.

Asked of ``redis_url`` only (``tenancy.py``), never of the cache's own Redis (``cache.redis_url``): that
one should evict.

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
SAFE_POLICY = "noeviction"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def eviction_policy(redis: Any, timeout_s: float = 0.5) -> tuple[str, int] | None:
    """(maxmemory-policy, maxmemory in bytes), or None when Redis does not tell (``CONFIG`` refused, renamed,
    or no answer in ``timeout_s``)."""
    try:
        async with asyncio.timeout(timeout_s):
            reply = await redis.config_get("maxmemory*")
    except Exception as exc:
        log.debug("Redis eviction policy not checked: CONFIG GET failed (%s: %s)", type(exc).__name__, exc)
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
