"""Shared response cache in Redis: one string per entry, expiring with its TTL.

Keys are ``<prefix>cache:<tenant scope>:<hash>``; Redis does the expiry and, with
a ``maxmemory-policy`` of ``allkeys-lru``/``volatile-lru``, the eviction. The
caller bounds every call with a short timeout.

A cache hit is one GET, so its cost is the client's: redis-py spends ~100 µs of
CPU on one GET on our 2-core machine, more than the rest of a hit. So GET, SET
and PING go over the lean pipelined connection of ``pipe.py`` (~20 µs a GET,
measured the same way) when one is given: ``app.py`` makes it with
``RedisPipe.from_url(redis_url)``, as for the tenancy gate; URLs the pipe does not
speak (TLS, query options) give None, and every call then goes through redis-py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aigw.stores.key_glob import escape
from aigw.stores.redis.pipe import RedisPipe
from aigw.stores.redis.purge import unlink_matching

# The longest TTL sent to Redis: 100 years. A longer one (``max_ttl_s`` raised, or ``.inf``, lets a request's ``ttl=``
# through) is refused by Redis (or cannot be written at all), which the cache would count as the backend failing.
MAX_TTL_MS = 100 * 365 * 86_400_000


def ttl_ms(ttl_s: float) -> int:
    """``ttl_s`` as Redis's milliseconds: at least 1, at most ``MAX_TTL_MS`` (also for an infinite TTL)."""
    return max(1, int(min(ttl_s * 1000, MAX_TTL_MS)))


class RedisCacheStore:
    name = "redis"
    in_process = False

    def __init__(self, redis: Any, prefix: str, pipe: RedisPipe | None = None) -> None:
        self.redis = redis
        self.prefix = prefix + "cache:"
        self._bprefix = self.prefix.encode()
        self.pipe = pipe  # None: every call through redis-py; closed by aclose

    async def get(self, key: str) -> bytes | None:
        if self.pipe is not None:
            value: bytes | None = await self.pipe.call(b"GET", self._bprefix + key.encode())
            return value
        found = await self.redis.get(self.prefix + key)
        return bytes(found) if found is not None else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        px = ttl_ms(ttl_s)
        if self.pipe is not None:
            await self.pipe.call(b"SET", self._bprefix + key.encode(), value, b"PX", b"%d" % px)
            return
        await self.redis.set(self.prefix + key, value, px=px)

    async def ping(self) -> None:
        if self.pipe is not None:
            await self.pipe.call(b"PING")
            return
        await self.redis.ping()

    async def purge(self, patterns: list[str] | None, counts: Callable[[str], bool] | None = None) -> int:
        mine = escape(self.prefix)
        start = len(self._bprefix)  # ``counts`` reads the key as the cache named it, without the prefix
        counted = None if counts is None else (lambda key: counts(key[start:].decode("utf-8", "replace")))
        return await unlink_matching(self.redis, [mine + p for p in patterns or ["*"]], counted)

    async def aclose(self) -> None:
        """Close the pipe's connection (the redis-py client is the app's, closed by it)."""
        if self.pipe is not None:
            await self.pipe.aclose()
