"""The Redis cache store over the lean pipelined connection (pipe.py): the same keys and values as
redis-py, concurrent calls matched to their replies, a lost server recovered from; TLS keeps redis-py."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis as redis_sync

from aigw.stores.redis.cache import RedisCacheStore
from aigw.stores.redis.client import make_redis
from aigw.stores.redis.pipe import RedisPipe
from tests.support.servers import free_port
from tests.support.services import start_own_redis, stop_own_redis


def lean_store(redis: Any, url: str, prefix: str) -> RedisCacheStore:
    """The store as app.py makes it: redis-py and a pipe to the same URL."""
    pipe = RedisPipe.from_url(url)
    assert pipe is not None
    return RedisCacheStore(redis, prefix, pipe)


@pytest.fixture
def port() -> Iterator[int]:
    yield free_port()


@pytest.fixture
async def own_redis(port: int) -> AsyncIterator[Any]:
    """A redis-py client of a redis-server of this test's own, both closed after it."""
    proc = start_own_redis(port)
    redis = make_redis(f"redis://127.0.0.1:{port}/0")
    try:
        yield redis
    finally:
        await redis.aclose()
        stop_own_redis(proc)


async def test_values_round_trip_and_match_redis_py(own_redis: Any, port: int) -> None:
    redis = own_redis
    store = lean_store(redis, f"redis://127.0.0.1:{port}/0", "aigw-test:")
    tricky = b"line\r\n$5\r\n*2\r\n-ERR not an error\r\n" + bytes(range(256))
    big = os.urandom(1_500_000)  # arrives in many pieces
    await store.set("t1:a", tricky, 60)
    await store.set("t1:big", big, 60)
    assert await store.get("t1:a") == tricky
    assert await store.get("t1:big") == big
    assert await store.get("t1:none") is None
    assert await redis.get("aigw-test:cache:t1:a") == tricky  # the same key and value as before
    assert 0 < await redis.pttl("aigw-test:cache:t1:a") <= 60_000
    await store.ping()


async def test_concurrent_calls_get_their_own_replies_even_when_some_give_up(own_redis: Any, port: int) -> None:
    redis = own_redis
    store = lean_store(redis, f"redis://127.0.0.1:{port}/0", "p:")
    for i in range(20):
        await store.set(f"k{i}", b"v%d" % i, 60)

    async def one(i: int) -> bytes | str | None:
        try:
            async with asyncio.timeout(0 if i % 4 == 0 else 5):
                return await store.get(f"k{i % 20}")
        except TimeoutError:
            return "gave up"

    results = await asyncio.gather(*(one(i) for i in range(200)))
    for i, got in enumerate(results):
        assert got in ("gave up", b"v%d" % (i % 20))
    assert [await store.get(f"k{i}") for i in range(3)] == [b"v0", b"v1", b"v2"]


async def test_a_lost_server_fails_calls_then_a_new_one_is_used(port: int) -> None:
    proc = start_own_redis(port)
    url = f"redis://127.0.0.1:{port}/0"
    redis = make_redis(url)
    try:
        store = lean_store(redis, url, "p:")
        await store.set("k", b"v", 60)
        assert await store.get("k") == b"v"
        stop_own_redis(proc)
        with pytest.raises(OSError):
            async with asyncio.timeout(2):
                await store.get("k")
        proc = start_own_redis(port)
        assert await store.get("k") is None  # a fresh server: reconnected, empty
        await store.set("k", b"again", 60)
        assert await store.get("k") == b"again"
    finally:
        await redis.aclose()
        stop_own_redis(proc)


async def test_password_and_database_are_used(port: int) -> None:
    proc = start_own_redis(port, "--requirepass", "s3cret")
    url = f"redis://:s3cret@127.0.0.1:{port}/3"
    redis = make_redis(url)
    try:
        store = lean_store(redis, url, "p:")
        await store.set("k", b"in db 3", 60)
        assert await redis.get("p:cache:k") == b"in db 3"  # redis-py, same db
        other = redis_sync.Redis(port=port, password="s3cret", db=0)
        assert other.get("p:cache:k") is None
        other.close()
        wrong_url = f"redis://:nope@127.0.0.1:{port}/0"
        wrong = lean_store(make_redis(wrong_url), wrong_url, "p:")
        with pytest.raises(ConnectionError, match="refused the handshake"):
            await wrong.get("k")
        await wrong.redis.aclose()
    finally:
        await redis.aclose()
        stop_own_redis(proc)


async def test_closing_the_store_closes_its_own_connection(own_redis: Any, port: int) -> None:
    store = lean_store(own_redis, f"redis://127.0.0.1:{port}/0", "aigw-test:")
    await store.set("t1:a", b"x", 60)  # the pipe connects on first use
    before = len(await own_redis.client_list())
    await store.aclose()
    for _ in range(50):
        if len(await own_redis.client_list()) == before - 1:
            break
        await asyncio.sleep(0.02)
    assert len(await own_redis.client_list()) == before - 1
    with pytest.raises(ConnectionError):
        await store.get("t1:a")


async def test_the_app_gives_its_redis_cache_a_pipe_and_leaves_tls_to_redis_py() -> None:
    from aigw.app import build_app
    from aigw.config.models import GatewayConfig

    for url, lean in (("redis://127.0.0.1:6390/4", True), ("rediss://127.0.0.1:6390/0", False)):
        config = GatewayConfig.model_validate({
            "server": {"master_key": "sk-test"}, "database_url": "sqlite://:memory:", "redis_url": url,
            "models": [{"name": "m", "provider": "mock", "model": "mock-1"}], "tenancy": {"enabled": False},
            "cache": {"mode": "exact", "backend": "redis"}})
        store = build_app(config).state["deps"].services["cache_stores"]["redis"]
        assert (store.pipe is not None) is lean, url
        await store.redis.aclose()
