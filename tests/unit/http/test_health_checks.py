"""Readiness checks: each dependency ok / degraded / down, and 503 only when a critical one is down."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from aigw.http.health import Health, breakers_check, database_check, redis_check, register_breakers


class FakeRedis:
    def __init__(self, fail: bool = False, hang: bool = False) -> None:
        self.fail, self.hang = fail, hang

    async def ping(self) -> bool:
        if self.hang:
            await asyncio.sleep(10)
        if self.fail:
            raise ConnectionError("refused")
        return True


async def ready(health: Health) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await health.ready(None, send)  # type: ignore[arg-type]
    return sent[0]["status"], orjson.loads(sent[1]["body"])


async def test_redis_and_database_down_degrade_without_a_503() -> None:
    h = Health()
    h.register("redis", redis_check(FakeRedis(fail=True)), critical=False)
    h.register("database", database_check(FakeRedis(hang=True).ping, timeout_s=0.05), critical=False)
    status, body = await ready(h)
    assert status == 200 and body["status"] == "degraded"
    assert body["checks"]["redis"] == {"status": "down", "detail": "ConnectionError"}
    assert body["checks"]["database"] == {"status": "down", "detail": "TimeoutError"}


async def test_healthy_dependencies_are_ok() -> None:
    h = Health()
    h.register("redis", redis_check(FakeRedis()), critical=False)
    status, body = await ready(h)
    assert status == 200 and body == {"status": "ok", "checks": {"redis": {"status": "ok", "detail": "ping"}}}


async def test_breakers_each_deployment_and_all_open_is_a_503() -> None:
    phases = {"a": "closed", "b": "half_open"}
    h = Health()
    register_breakers(h, ["a", "b"], lambda: dict(phases))
    status, body = await ready(h)
    assert status == 200 and body["status"] == "degraded"
    assert body["checks"]["breaker:a"]["status"] == "ok"
    assert body["checks"]["breaker:b"] == {"status": "degraded", "detail": "half_open"}
    await asyncio.sleep(0.01)
    phases.update(a="open", b="open")
    status, body = await ready(h)
    assert status == 503 and body["status"] == "down"
    assert body["checks"]["breaker:a"]["status"] == "down" and body["checks"]["deployments"]["status"] == "down"


async def test_half_open_everywhere_can_still_serve() -> None:
    status, detail = await breakers_check(lambda: {"a": "half_open", "b": "open"})()
    assert status == "degraded" and "a=half_open" in detail


async def test_checks_run_side_by_side_so_hung_stores_do_not_add_up() -> None:
    """Redis (0.5 s) and the database (1 s) hung together held /health/ready for 1.5 s, one check after the
    other: past a probe's usual 1 s timeout, so a gateway that can serve was taken out of rotation."""
    h = Health()
    h.register("redis", redis_check(FakeRedis(hang=True), timeout_s=0.3), critical=False)
    h.register("cache_redis", redis_check(FakeRedis(hang=True), timeout_s=0.3), critical=False)
    h.register("database", database_check(FakeRedis(hang=True).ping, timeout_s=0.3), critical=False)
    loop = asyncio.get_running_loop()
    start = loop.time()
    status, body = await ready(h)
    assert loop.time() - start < 0.6
    assert status == 200 and body["status"] == "degraded"
    assert list(body["checks"]) == ["redis", "cache_redis", "database"]  # the registration order, as before
    assert all(c == {"status": "down", "detail": "TimeoutError"} for c in body["checks"].values())
