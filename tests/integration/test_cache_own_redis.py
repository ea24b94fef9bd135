"""The cache on a Redis of its own (``cache.redis_url``), limits and budgets on ``redis_url``.

Two redis-servers of the test's own: the counters' one under noeviction, the cache's under allkeys-lru
(what docs/tenancy.md now recommends). Entries, the semantic index and the purge log go to the cache's
Redis only, counters to the other only; the cache's Redis dying degrades the cache alone.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from aigw.cli.admin_client import AdminClient
from tests.integration.tenancy_support import MASTER, gateway_config, setup_key
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.servers import free_port
from tests.support.services import start_own_redis, stop_own_redis

PREFIX = "aigw-test:own:"
LRU = ("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")


@pytest.fixture
def two_redis() -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """(counters URL, cache URL, the cache server's process): noeviction and allkeys-lru, both the test's own."""
    counters = start_own_redis(counters_port := free_port())
    try:
        cache = start_own_redis(cache_port := free_port(), *LRU)
        try:
            yield f"redis://127.0.0.1:{counters_port}/0", f"redis://127.0.0.1:{cache_port}/0", cache
        finally:
            stop_own_redis(cache)
    finally:
        stop_own_redis(counters)


def config(db: Path, counters: str, cache: str, **extra: Any) -> dict[str, Any]:
    return gateway_config(db, redis_url=counters, redis_prefix=PREFIX,
                          cache={"mode": "exact", "backend": "redis", "redis_url": cache, "timeout_ms": 500,
                                 "retry_after_s": 0.5, **extra})


def post(gw: RunningGateway, key: str, text: str) -> tuple[int, str | None]:
    body = json.dumps({"model": "mock", "messages": [{"role": "user", "content": text}], "max_tokens": 20})
    req = urllib.request.Request(gw.v1 + "/chat/completions", body.encode(),
                                 {"content-type": "application/json", "authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
            return r.status, r.headers.get("x-aigw-cache")
    except urllib.error.HTTPError as err:
        return err.code, None



def settle(gw: RunningGateway) -> None:
    gw.call(gw.app.state["pipeline"].stage("cache").flush())


def keys_of(url: str) -> list[str]:
    client = redis_sync.Redis.from_url(url)
    try:
        return sorted(k.decode() for k in client.scan_iter(count=1000))
    finally:
        client.close()


def clients_of(url: str) -> int:
    """Connections the server has besides the one asking."""
    client = redis_sync.Redis.from_url(url)
    try:
        return len(client.client_list()) - 1
    finally:
        client.close()


def test_entries_go_to_the_cache_redis_and_counters_to_the_other(
        two_redis: tuple[str, str, subprocess.Popen[bytes]], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    counters, cache, _ = two_redis
    caplog.set_level(logging.WARNING, "aigw")
    with running_gateway(config(tmp_path / "gw.db", counters, cache)) as gw:
        key = setup_key(AdminClient(gw.url, MASTER), "own-co", rpm=1000, budget_usd=100, budget_period="daily")
        assert post(gw, key["key"], "where do answers live?") == (200, "miss")
        settle(gw)
        assert post(gw, key["key"], "where do answers live?") == (200, "hit")
        checks = gw.ready()[1]["checks"]
        assert checks["redis"]["status"] == checks["cache_redis"]["status"] == "ok"
        in_cache, in_counters = keys_of(cache), keys_of(counters)
        assert [k for k in in_cache if k.startswith(PREFIX + "cache:")], in_cache
        assert all(k.startswith(PREFIX + "cache:") for k in in_cache), in_cache  # no counter in the cache's Redis
        assert in_counters and not [k for k in in_counters  # counters there, and no entry
                                    if k.startswith((PREFIX + "cache:", PREFIX + "csem:", PREFIX + "purges:"))]
    # the counters' Redis is noeviction, the cache's allkeys-lru: no warning, the cache's may evict
    assert [r.getMessage() for r in caplog.records if "maxmemory-policy" in r.getMessage()] == []
    assert clients_of(cache) == 0  # shutdown closed the cache's client and its lean connection


def test_a_cache_redis_that_dies_degrades_the_cache_and_nothing_else(
        two_redis: tuple[str, str, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    counters, cache, cache_proc = two_redis
    with running_gateway(config(tmp_path / "gw.db", counters, cache, near_ttl_s=0)) as gw:
        key = setup_key(AdminClient(gw.url, MASTER), "own-co", rpm=6, budget_usd=100, budget_period="daily")
        assert post(gw, key["key"], "asked twice") == (200, "miss")
        settle(gw)
        assert post(gw, key["key"], "asked twice") == (200, "hit")
        stop_own_redis(cache_proc)
        assert [post(gw, key["key"], "asked twice") for _ in range(4)] == [(200, "miss")] * 4
        status, body = gw.ready()
        checks = body["checks"]
        assert status == 200, body
        assert checks["cache_redis"]["status"] == "down" and checks["cache"]["status"] == "degraded", checks
        assert checks["redis"]["status"] == "ok" and checks["gate"]["status"] == "ok", checks
        assert post(gw, key["key"], "one too many")[0] == 429  # rpm 6 still counted, in the counters' Redis


def test_a_purge_reaches_the_replicas_through_the_cache_redis(
        two_redis: tuple[str, str, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    counters, cache, _ = two_redis
    # the master key: each gateway has a ledger database of its own, so a key made on one is unknown to the other
    with running_gateway(config(tmp_path / "a.db", counters, cache, near_ttl_s=60)) as a, \
            running_gateway(config(tmp_path / "b.db", counters, cache, near_ttl_s=60)) as b:
        assert post(a, MASTER, "stale answer") == (200, "miss")
        settle(a)
        assert post(b, MASTER, "stale answer") == (200, "hit")  # b keeps a copy for up to 60 s from here
        out = AdminClient(a.url, MASTER).request("DELETE", "/admin/cache")
        assert out["by_backend"]["redis"] == 1
        assert not [k for k in keys_of(cache) if k.startswith(PREFIX + "cache:")]
        assert PREFIX + "purges:cache" in keys_of(cache)  # announced where the entries live
        assert not [k for k in keys_of(counters) if k.startswith(PREFIX + "purges:")]
        deadline = time.monotonic() + 5  # b reads the purge log four times a second
        while post(b, MASTER, "stale answer")[1] == "hit":
            assert time.monotonic() < deadline, "b still answers from its copy of the purged entry"
            time.sleep(0.1)


def test_a_cache_redis_url_without_a_backend_stores_its_entries_there(
        own_redis: tuple[str, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    """``cache: {redis_url: ...}`` alone: before, the URL was ignored and the entries stayed in memory."""
    url, _ = own_redis
    cfg = gateway_config(tmp_path / "gw.db", redis_prefix=PREFIX, cache={"mode": "exact", "redis_url": url,
                                                                         "timeout_ms": 500, "near_ttl_s": 0})
    with running_gateway(cfg) as gw:
        assert post(gw, MASTER, "kept where the URL says") == (200, "miss")
        settle(gw)
        assert post(gw, MASTER, "kept where the URL says") == (200, "hit")
        assert gw.ready()[1]["checks"]["cache_redis"]["status"] == "ok"
        assert [k for k in keys_of(url) if k.startswith(PREFIX + "cache:")], keys_of(url)
