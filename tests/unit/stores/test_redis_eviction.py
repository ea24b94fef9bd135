"""Start-up warns once when the Redis that holds limits and budgets may evict their keys (a maxmemory-policy
other than noeviction: an evicted budget counter restarts at zero, and the budget is overrun), says nothing
for noeviction, and nothing above debug when CONFIG is refused (managed Redis) or Redis is away; it never
stops the start. Against redis-servers of the test's own (never the shared one's settings)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from aigw.config.models import GatewayConfig
from aigw.providers.http import HttpClients
from aigw.stores.redis.client import make_redis
from aigw.stores.redis.eviction import cache_full_warning, eviction_policy, eviction_warning, warn_if_evicting
from aigw.supervise import Supervisor
from aigw.tenancy import Tenancy
from tests.support.app_lifespan import start_and_stop
from tests.support.servers import free_port
from tests.support.services import start_own_redis, stop_own_redis


@pytest.fixture
def redis_with(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis of the test's own, started with the options the test is parametrized with."""
    proc = start_own_redis(port := free_port(), *request.param)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_own_redis(proc)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("redis_with", [("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"),
                                        ("--maxmemory", "64mb", "--maxmemory-policy", "volatile-lfu")],
                         indirect=True)
async def test_an_evicting_policy_warns_once_naming_it_the_risk_and_the_fix(
        redis_with: str, caplog: pytest.LogCaptureFixture) -> None:
    redis = make_redis(redis_with)
    try:
        await warn_if_evicting(redis)
    finally:
        await redis.aclose()
    lines = _warnings(caplog)
    assert len(lines) == 1, lines
    policy = "allkeys-lru" if "allkeys" in lines[0] else "volatile-lfu"
    assert f"maxmemory-policy {policy}" in lines[0] and "67108864" in lines[0]
    assert "overrun" in lines[0] and "noeviction" in lines[0]


@pytest.mark.parametrize(("redis_with", "refused"), [
    (("--maxmemory", "64mb", "--maxmemory-policy", "noeviction"), False),
    (("--rename-command", "CONFIG", ""), True),
    (("--maxmemory-policy", "allkeys-lru", "--rename-command", "CONFIG", ""), True),
], indirect=["redis_with"])
async def test_noeviction_or_a_refused_config_says_nothing(redis_with: str, refused: bool,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "aigw.tenancy")
    redis = make_redis(redis_with)
    try:
        await warn_if_evicting(redis)
        assert (await eviction_policy(redis) is None) == refused
    finally:
        await redis.aclose()
    assert _warnings(caplog) == []
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG and "not checked" in r.getMessage()]
    assert bool(debug) == refused  # CONFIG disabled, as managed Redis often does: a debug line only


async def test_a_redis_that_is_away_says_nothing_here() -> None:
    redis = make_redis(f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert await eviction_policy(redis) is None
        await warn_if_evicting(redis)
    finally:
        await redis.aclose()


def test_only_noeviction_is_safe() -> None:
    assert eviction_warning("noeviction", 0) is None
    for policy in ("allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu",
                   "volatile-random", "volatile-ttl"):
        assert eviction_warning(policy, 1 << 20) is not None


@pytest.mark.parametrize("redis_with", [("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lfu")],
                         indirect=True)
async def test_the_gateway_start_warns_when_limits_and_budgets_use_an_evicting_redis(
        redis_with: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = GatewayConfig.model_validate({
        "database_url": f"sqlite:///{tmp_path}/aigw.db", "redis_url": redis_with, "redis_prefix": "aigw-test:ev:",
        "models": [{"name": "mock", "provider": "mock"}], "tenancy": {"ledger": {"writer": "thread"}},
    })
    redis = make_redis(redis_with)
    tenancy = Tenancy(config, redis, Supervisor(), HttpClients())
    try:
        await tenancy.start()
    finally:
        await tenancy.stop()
        await redis.aclose()
    lines = [line for line in _warnings(caplog) if "maxmemory-policy" in line]
    assert len(lines) == 1 and "allkeys-lfu" in lines[0], _warnings(caplog)


@pytest.mark.parametrize("redis_with", [("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")],
                         indirect=True)
async def test_a_cache_only_redis_may_evict_without_a_warning(
        redis_with: str, caplog: pytest.LogCaptureFixture) -> None:
    """Without tenancy, Redis holds the cache (and the deployments' shared state): evicting is what it is for."""
    config = GatewayConfig.model_validate({
        "redis_url": redis_with, "redis_prefix": "aigw-test:ev:", "tenancy": {"enabled": False},
        "models": [{"name": "mock", "provider": "mock"}], "cache": {"mode": "exact", "backend": "redis"},
    })
    await _start_and_stop(config)
    assert [line for line in _warnings(caplog) if "maxmemory" in line] == []


NOEVICTION_FULL_AT_64MB = ("--maxmemory", "64mb", "--maxmemory-policy", "noeviction")


async def _start_and_stop(config: GatewayConfig) -> None:
    from aigw.app import build_app

    await start_and_stop(build_app(config))


def _cache_config(tmp_path: Path, cache_url: str, redis_url: str = "", tenancy: bool = False) -> GatewayConfig:
    return GatewayConfig.model_validate({
        "database_url": f"sqlite:///{tmp_path}/aigw.db", "redis_url": redis_url, "redis_prefix": "aigw-test:ev:",
        "tenancy": {"enabled": tenancy, "ledger": {"writer": "thread"}},
        "models": [{"name": "mock", "provider": "mock"}], "cache": {"mode": "exact", "redis_url": cache_url},
        "observability": {"request_log": {"enabled": False}},  # not what is tested, and its writer outlives a start
    })


def test_a_cache_redis_warns_only_when_it_refuses_writes_once_full() -> None:
    line = cache_full_warning("noeviction", 1 << 26)
    assert line is not None and "refuses every store" in line and "allkeys-lru" in line and "67108864" in line
    assert cache_full_warning("noeviction", 0) is None  # no maxmemory: never full in Redis's sense
    for policy in ("allkeys-lru", "allkeys-lfu", "volatile-lru", "volatile-ttl"):
        assert cache_full_warning(policy, 1 << 26) is None


@pytest.mark.parametrize("redis_with", [NOEVICTION_FULL_AT_64MB], indirect=True)
async def test_the_start_warns_when_the_cache_own_redis_would_refuse_stores_once_full(
        redis_with: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "aigw")
    await _start_and_stop(_cache_config(tmp_path, redis_with))
    lines = [line for line in _warnings(caplog) if "maxmemory" in line]
    assert len(lines) == 1, _warnings(caplog)
    assert lines[0].startswith("the cache's Redis (cache.redis_url) has maxmemory-policy noeviction")
    assert "refuses every store" in lines[0] and "maxmemory-policy allkeys-lru" in lines[0]
    assert [r.name for r in caplog.records if r.getMessage() == lines[0]] == ["aigw.cache"]


@pytest.mark.parametrize("redis_with", [("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"),
                                        ("--maxmemory-policy", "noeviction")], indirect=True)
async def test_a_cache_redis_that_evicts_or_has_no_limit_says_nothing(
        redis_with: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    await _start_and_stop(_cache_config(tmp_path, redis_with))
    assert [line for line in _warnings(caplog) if "maxmemory" in line] == []


@pytest.mark.parametrize("redis_with", [(*NOEVICTION_FULL_AT_64MB, "--rename-command", "CONFIG", "")],
                         indirect=True)
async def test_a_cache_redis_that_refuses_config_gets_a_debug_line_only(
        redis_with: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "aigw")
    await _start_and_stop(_cache_config(tmp_path, redis_with))
    assert [line for line in _warnings(caplog) if "maxmemory" in line] == []
    assert [r for r in caplog.records if r.name == "aigw.cache" and r.levelno == logging.DEBUG
            and "not checked" in r.getMessage()]


@pytest.mark.parametrize("redis_with", [NOEVICTION_FULL_AT_64MB], indirect=True)
@pytest.mark.parametrize("cache_db", ["/0", "/1"])
async def test_a_cache_sharing_the_counters_redis_says_nothing_new(
        redis_with: str, cache_db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The same server (the same URL, or another database number on it): the counters need noeviction there."""
    cache_url = redis_with.removesuffix("/0") + cache_db
    await _start_and_stop(_cache_config(tmp_path, cache_url, redis_url=redis_with, tenancy=True))
    assert [line for line in _warnings(caplog) if "maxmemory" in line] == []
