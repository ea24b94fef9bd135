"""Shared semantic index in Redis (plain Redis 7, no vector module needed).

One bucket = a hash (entry id -> 8-byte expiry + 2-byte length + word-order mark + float32 vector) and two sorted
sets, entry ids by expiry (``:t``) and by when they were added (``:a``), that a Lua script uses to drop the
expired and, past ``max_per_bucket``, the oldest atomically on each add. (Oldest by addition, not the first to
expire: answers stored with a shorter TTL share buckets with the others, and a full bucket must not drop each
of them as it comes in.) A lookup is one HGETALL and a dot product here; buckets
are small (``max_per_context``) because they only hold answers whose whole
context, bar the last user turn, is the same.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from aigw.stores.cache_base import SemanticMatch, Vector, swapped
from aigw.stores.key_glob import escape
from aigw.stores.redis.cache import ttl_ms
from aigw.stores.redis.purge import unlink_matching
from aigw.types import Clock, SystemClock

_ADD = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
for _, id in ipairs(gone) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if extra > 0 then
  local oldest = {}
  -- vectors of a bucket written before ':a' was kept are in ':t' only, and older than any in ':a': first out
  for _, id in ipairs(redis.call('ZDIFF', 2, KEYS[2], KEYS[3])) do
    if #oldest < extra then oldest[#oldest + 1] = id end
  end
  if #oldest < extra then
    for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, extra - #oldest - 1)) do oldest[#oldest + 1] = id end
  end
  for _, id in ipairs(oldest) do
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
  end
end
local ttl = tonumber(ARGV[6])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('PEXPIRE', KEYS[3], redis.call('PTTL', KEYS[1]))
return #gone
"""
_HEAD = struct.Struct("<dH")  # expiry, then the length of the word-order mark that follows it
# A value of the earlier layout (expiry + vector, no mark) never has a consistent length here: passed over.


class RedisSemanticIndex:
    name = "redis"

    def __init__(self, redis: Any, prefix: str, max_per_bucket: int, clock: Clock | None = None) -> None:
        self.redis = redis
        self.prefix = prefix + "csem:"
        self.max_per_bucket = max_per_bucket
        self.clock = clock or SystemClock()
        self._add = redis.register_script(_ADD)

    def _keys(self, bucket: str) -> tuple[str, str, str]:
        base = f"{self.prefix}{{{bucket}}}"  # hash tag: the bucket's keys in one cluster slot
        return base + ":v", base + ":t", base + ":a"

    async def search(self, bucket: str, vector: Vector, threshold: float,
                     mark: bytes = b"") -> SemanticMatch | None:
        raw: dict[bytes, bytes] = await self.redis.hgetall(self._keys(bucket)[0])
        if not raw:
            return None
        now = self.clock.now()
        ids: list[bytes] = []
        rows: list[Vector] = []
        for entry_id, value in raw.items():
            if len(value) < _HEAD.size:
                continue
            expires, size = _HEAD.unpack_from(value)
            head = _HEAD.size + size
            if len(value) == head + vector.nbytes and expires > now \
                    and not swapped(mark, value[_HEAD.size:head]):  # the same words in another order: passed
                ids.append(entry_id)
                rows.append(np.frombuffer(value, dtype=np.float32, offset=head))
        if not rows:
            return None
        scores = np.vstack(rows) @ vector
        scores[~np.isfinite(scores)] = -np.inf  # a NaN row (an overflowed embedding) is no match and hides none
        best = int(np.argmax(scores))
        score = float(scores[best])
        return SemanticMatch(ids[best].decode(), score) if score >= threshold else None

    async def add(self, bucket: str, vector: Vector, entry_id: str, ttl_s: float, mark: bytes = b"") -> None:
        now = self.clock.now()
        value = _HEAD.pack(now + ttl_s, len(mark)) + mark + np.asarray(vector, dtype=np.float32).tobytes()
        await self._add(keys=list(self._keys(bucket)),
                        args=[entry_id, value, now + ttl_s, now, self.max_per_bucket, ttl_ms(ttl_s)])

    async def discard(self, bucket: str, entry_id: str) -> None:
        vectors, expiries, added = self._keys(bucket)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(vectors, entry_id)
            pipe.zrem(expiries, entry_id)
            pipe.zrem(added, entry_id)
            await pipe.execute()

    async def purge(self, patterns: list[str] | None) -> int:
        # a bucket is three keys, ``<prefix>csem:{<bucket>}:v``, ``...:t`` and ``...:a``: count the first kind
        head, tail = escape(self.prefix + "{"), escape("}:") + "*"
        return await unlink_matching(self.redis, [head + p + tail for p in patterns or ["*"]],
                                     counts=lambda key: key.endswith(b":v"))
