"""The Redis cache store and semantic index against a real Redis (skipped without one)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from aigw.pipeline.stages.cache_keys import word_order_mark
from aigw.stores.key_glob import escape
from aigw.stores.redis.cache import RedisCacheStore
from aigw.stores.redis.client import make_redis
from aigw.stores.redis.semantic import RedisSemanticIndex


@pytest.fixture
async def redis(redis_isolated: tuple[str, str]) -> AsyncIterator[tuple[Any, str]]:
    url, prefix = redis_isolated
    client = make_redis(url)
    yield client, prefix
    await client.aclose()


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


async def test_set_get_and_expiry(redis: tuple[Any, str]) -> None:
    client, prefix = redis
    store = RedisCacheStore(client, prefix)
    await store.set("t1:abc", b"answer", ttl_s=0.3)
    assert await store.get("t1:abc") == b"answer"
    assert await client.exists(prefix + "cache:t1:abc") == 1  # under the run's own prefix
    await asyncio.sleep(0.45)
    assert await store.get("t1:abc") is None


async def test_two_prefixes_do_not_see_each_other(redis: tuple[Any, str]) -> None:
    client, prefix = redis
    await RedisCacheStore(client, prefix).set("k", b"one", 60)
    assert await RedisCacheStore(client, prefix + "other:").get("k") is None


async def test_semantic_index_threshold_bucket_and_bound(redis: tuple[Any, str]) -> None:
    client, prefix = redis
    index = RedisSemanticIndex(client, prefix, max_per_bucket=2)
    await index.add("t1:ctx", unit(1, 0, 0), "a", ttl_s=60)
    hit = await index.search("t1:ctx", unit(1, 0.2, 0), threshold=0.95)
    assert hit is not None and hit.entry_id == "a" and hit.score == pytest.approx(0.9806, abs=1e-3)
    assert await index.search("t1:ctx", unit(1, 0.5, 0), threshold=0.95) is None
    assert await index.search("t2:ctx", unit(1, 0, 0), threshold=0.5) is None
    await index.add("t1:ctx", unit(0, 1, 0), "b", ttl_s=60)
    await index.add("t1:ctx", unit(0, 0, 1), "c", ttl_s=60)
    assert await client.hlen(prefix + "csem:{t1:ctx}:v") == 2  # "a", the oldest, was dropped
    assert await index.search("t1:ctx", unit(1, 0, 0), threshold=0.9) is None


async def test_semantic_index_expiry(redis: tuple[Any, str]) -> None:
    client, prefix = redis
    index = RedisSemanticIndex(client, prefix, max_per_bucket=10)
    await index.add("b", unit(1, 0, 0), "short", ttl_s=0.2)
    await index.add("b", unit(0, 1, 0), "long", ttl_s=60)
    await asyncio.sleep(0.3)
    assert await index.search("b", unit(1, 0, 0), threshold=0.9) is None
    hit = await index.search("b", unit(0, 1, 0), threshold=0.9)
    assert hit is not None and hit.entry_id == "long"
    assert 0 < await client.pttl(prefix + "csem:{b}:v") <= 60_000


async def test_a_purge_unlinks_the_entries_and_buckets_its_patterns_match(redis: tuple[Any, str]) -> None:
    client, prefix = redis
    store, index = RedisCacheStore(client, prefix), RedisSemanticIndex(client, prefix, max_per_bucket=4)
    keys = ("t[1]:aaaa.1", "t[1]/k/key_1:aaaa.2", "t[1]0:aaaa.3", "t2:aaaa.4", "t2:bbbb.5")
    for key in keys:
        await store.set(key, b"answer", 60)
        await index.add(f"{key}:local", unit(1, 0, 0), key, ttl_s=60)
    other = RedisCacheStore(client, prefix + "other:")  # another gateway sharing the Redis
    await other.set("t[1]:aaaa.1", b"theirs", 60)
    tenant = [escape("t[1]") + ":*", escape("t[1]") + "/*"]  # glob characters in an id are taken literally
    assert await store.purge(tenant) == 2 and await index.purge(tenant) == 2
    assert [k for k in keys if await store.get(k)] == ["t[1]0:aaaa.3", "t2:aaaa.4", "t2:bbbb.5"]
    assert await index.search("t[1]:aaaa.1:local", unit(1, 0, 0), 0.9) is None
    assert await client.exists(prefix + "csem:{t[1]:aaaa.1:local}:t") == 0  # both keys of a bucket go
    assert await store.purge(["*:aaaa.*"]) == 2 and await index.purge(["*:aaaa.*"]) == 2  # a model
    assert await index.search("t2:bbbb.5:local", unit(1, 0, 0), 0.9) is not None
    assert await store.purge(None) == 1 and await index.purge(None) == 1
    assert await other.get("t[1]:aaaa.1") == b"theirs"


async def test_a_purge_past_one_page_of_keys(redis: tuple[Any, str]) -> None:
    client, prefix = redis
    store = RedisCacheStore(client, prefix)
    for i in range(1203):
        await client.set(f"{prefix}cache:t1:aaaa.{i}", b"x", px=60_000)
    assert await store.purge(["t1:*"]) == 1203


async def test_a_purge_deletes_every_key_it_matches_but_counts_only_those_counts_accepts(
        redis: tuple[Any, str]) -> None:
    client, prefix = redis
    store = RedisCacheStore(client, prefix)
    for key in ("t1:aaaa.1", "t1:bbbb.via.aaaa.1", "t1:aaaa.2", "t2:aaaa.3"):
        await store.set(key, b"answer", 60)
    seen: list[str] = []

    def counts(key: str) -> bool:
        seen.append(key)
        return ".via." not in key

    assert await store.purge(["t1:*"], counts) == 2  # the mark went uncounted
    assert sorted(set(seen)) == ["t1:aaaa.1", "t1:aaaa.2", "t1:bbbb.via.aaaa.1"]  # keys as the cache named them
    assert await store.get("t1:bbbb.via.aaaa.1") is None and await store.get("t2:aaaa.3") == b"answer"


class ExpiresDuringScan:
    """The real client, but its SCAN also reports keys that expire before the UNLINK reaches them."""

    def __init__(self, client: Any, gone: list[str]) -> None:
        self.client, self.gone = client, gone

    async def scan_iter(self, **kwargs: Any) -> AsyncIterator[bytes]:
        async for key in self.client.scan_iter(**kwargs):
            yield key
        for key in self.gone:
            yield key.encode()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


async def test_a_purge_counts_what_redis_removed_not_what_the_scan_saw(redis: tuple[Any, str]) -> None:
    client, prefix = redis
    index = RedisSemanticIndex(client, prefix, max_per_bucket=4)
    await index.add("t1:ctx", unit(1, 0, 0), "a", ttl_s=60)
    expired = [f"{prefix}csem:{{t1:old}}:v", f"{prefix}csem:{{t1:old}}:t"]
    assert await RedisSemanticIndex(ExpiresDuringScan(client, expired), prefix, 4).purge(["t1:*"]) == 1
    assert await index.search("t1:ctx", unit(1, 0, 0), 0.9) is None


async def test_semantic_index_passes_over_the_same_words_in_another_order(redis: tuple[Any, str]) -> None:
    client, prefix = redis
    index = RedisSemanticIndex(client, prefix, max_per_bucket=8)
    await index.add("t1:w", unit(1, 0, 0), "gold-lead", ttl_s=60, mark=word_order_mark("Is gold heavier than lead?"))
    turned = word_order_mark("Is lead heavier than gold?")
    assert await index.search("t1:w", unit(1, 0, 0), threshold=0.9, mark=turned) is None
    same = await index.search("t1:w", unit(1, 0, 0), threshold=0.9, mark=word_order_mark("is gold heavier than lead"))
    assert same is not None and same.entry_id == "gold-lead"
    live = struct.pack("<d", 4e9)  # expires far ahead: only its layout (no mark) makes it unreadable
    await client.hset(prefix + "csem:{t1:w}:v", "old-layout", live + unit(1, 0, 0).tobytes())
    found = await index.search("t1:w", unit(1, 0, 0), threshold=0.9)  # a value without a mark: passed over
    assert found is not None and found.entry_id == "gold-lead"


async def test_semantic_index_discard_drops_a_vector_and_the_next_best_matches(redis: tuple[Any, str]) -> None:
    client, prefix = redis
    index = RedisSemanticIndex(client, prefix, max_per_bucket=10)
    await index.add("t1:ctx", unit(1, 0, 0), "best", ttl_s=60)
    await index.add("t1:ctx", unit(1, 0.2, 0), "next", ttl_s=60)
    await index.discard("t1:ctx", "best")
    hit = await index.search("t1:ctx", unit(1, 0, 0), threshold=0.95)
    assert hit is not None and hit.entry_id == "next"
    assert await client.hlen(prefix + "csem:{t1:ctx}:v") == 1 and await client.zcard(prefix + "csem:{t1:ctx}:t") == 1


async def test_semantic_index_bound_drops_the_oldest_vector_not_the_newest_with_a_shorter_ttl(
        redis: tuple[Any, str]) -> None:
    # one system prompt = one bucket for every single-turn question, so a busy app's bucket is always full;
    # answers stored with a shorter TTL (a request's ttl=, a key's ttl_s) share it with the others. The bound
    # dropped the vector that expires first, so each new short-lived answer was dropped as it was added
    client, prefix = redis
    index = RedisSemanticIndex(client, prefix, max_per_bucket=2)
    await index.add("t1:ctx", unit(1, 0, 0), "oldest", ttl_s=3600)
    await index.add("t1:ctx", unit(0, 1, 0), "older", ttl_s=3600)
    await index.add("t1:ctx", unit(0, 0, 1), "newest", ttl_s=60)
    hit = await index.search("t1:ctx", unit(0, 0, 1), threshold=0.9)
    assert hit is not None and hit.entry_id == "newest"
    assert await index.search("t1:ctx", unit(1, 0, 0), threshold=0.9) is None  # the oldest went, as in memory
    assert await client.hlen(prefix + "csem:{t1:ctx}:v") == 2
    await index.discard("t1:ctx", "newest")
    await index.add("t1:ctx", unit(1, 1, 0), "next", ttl_s=60)
    assert await client.hlen(prefix + "csem:{t1:ctx}:v") == 2  # a discarded vector frees its place
    assert (await index.search("t1:ctx", unit(0, 1, 0), threshold=0.9) or hit).entry_id == "older"
    assert await index.purge(["t1:*"]) == 1
    assert [k async for k in client.scan_iter(match=prefix + "csem:*")] == []  # every key of the bucket went


async def test_semantic_index_bound_in_a_bucket_written_before_the_added_order_was_kept(
        redis: tuple[Any, str]) -> None:
    # a full bucket of an earlier version has no ``:a``: its vectors are older than any added since, so they go
    # first (taking the oldest of ``:a`` alone dropped each new vector as it came, until the old ones expired)
    client, prefix = redis
    index = RedisSemanticIndex(client, prefix, max_per_bucket=2)
    await index.add("t1:old", unit(1, 0, 0), "old-1", ttl_s=3600)
    await index.add("t1:old", unit(0, 1, 0), "old-2", ttl_s=3600)
    await client.delete(prefix + "csem:{t1:old}:a")  # as an earlier version left it
    await index.add("t1:old", unit(0, 0, 1), "new-1", ttl_s=3600)
    await index.add("t1:old", unit(1, 1, 0), "new-2", ttl_s=3600)
    for new in ("new-1", "new-2"):
        vector = unit(0, 0, 1) if new == "new-1" else unit(1, 1, 0)
        hit = await index.search("t1:old", vector, threshold=0.99)
        assert hit is not None and hit.entry_id == new
    assert await client.hlen(prefix + "csem:{t1:old}:v") == 2


async def test_a_ttl_longer_than_redis_takes_is_capped_not_a_backend_failure(
        redis: tuple[Any, str], redis_isolated: tuple[str, str]) -> None:
    # with max_ttl_s raised (or .inf, which the config takes), a request's `x-aigw-cache: ttl=1e17` reached the
    # store: Redis refused the SET ("value is out of range"; an infinite TTL could not even be sent), and the cache
    # counts a refused call as the backend failing, so one caller switched the shared cache off for everyone
    import math

    from aigw.stores.redis.pipe import RedisPipe

    client, prefix = redis
    url, _ = redis_isolated
    for store in (RedisCacheStore(client, prefix), RedisCacheStore(client, prefix, RedisPipe.from_url(url))):
        for ttl in (1e17, math.inf):
            await client.delete(prefix + "cache:t1:long")
            await store.set("t1:long", b"answer", ttl)
            assert await store.get("t1:long") == b"answer"
            assert await client.pttl(prefix + "cache:t1:long") > 10 * 365 * 86_400_000
        await store.aclose()
    index = RedisSemanticIndex(client, prefix, max_per_bucket=4)
    for ttl in (1e17, math.inf):
        await index.add(f"t1:{ttl}", unit(1, 0, 0), f"t1:{ttl}", ttl_s=ttl)
        hit = await index.search(f"t1:{ttl}", unit(1, 0, 0), threshold=0.9)
        assert hit is not None and hit.entry_id == f"t1:{ttl}"


async def test_semantic_index_a_stored_vector_that_is_not_a_number_hides_no_other_match(
        redis: tuple[Any, str]) -> None:
    # an embedding that overflowed float32 (inf / inf) is NaN throughout, and its question's vector is stored
    # like any other: the search took the bucket's argmax, which is that NaN row, so no question of the bucket
    # matched until it expired (the memory index passes over it)
    client, prefix = redis
    index = RedisSemanticIndex(client, prefix, max_per_bucket=8)
    await index.add("t1:ctx", unit(1, 0, 0), "good", ttl_s=60)
    await index.add("t1:ctx", np.full(3, np.nan, dtype=np.float32), "overflowed", ttl_s=60)
    hit = await index.search("t1:ctx", unit(1, 0.1, 0), threshold=0.9)
    assert hit is not None and hit.entry_id == "good"
    assert await index.search("t1:ctx", unit(0, 1, 0), threshold=0.9) is None
