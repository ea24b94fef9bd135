"""Shared response cache in Redis: one string per entry, expiring with its TTL.

Keys are ``<prefix>cache:<tenant scope>:<hash>``; Redis does the expiry and, with
a ``maxmemory-policy`` of ``allkeys-lru``/``volatile-lru``, the eviction. The
caller bounds every call with a short timeout.
"""

from __future__ import annotations

from typing import Any


class RedisCacheStore:
    name = "redis"
    in_process = False

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix + "cache:"

    async def get(self, key: str) -> bytes | None:
        value = await self.redis.get(self.prefix + key)
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self.redis.set(self.prefix + key, value, px=max(1, int(ttl_s * 1000)))

    async def ping(self) -> None:
        await self.redis.ping()
