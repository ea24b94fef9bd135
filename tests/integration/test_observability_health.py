"""/health/ready: database, Redis and each deployment's breaker as ok / degraded / down; 503 only
when the gateway cannot serve."""

from __future__ import annotations

from typing import Any

import requests

from tests.support.gateway import RunningGateway, running_gateway


def chat(gw: RunningGateway, model: str) -> int:
    return requests.post(gw.v1 + "/chat/completions", timeout=5,
                         json={"model": model, "messages": [{"role": "user", "content": "hi"}]}).status_code


def config(tmp_path: Any, **extra: Any) -> dict[str, Any]:
    return {
        "database_url": f"sqlite:///{tmp_path}/gw.db",
        "models": [{"name": "good", "provider": "mock", "id": "good-1"},
                   {"name": "bad", "provider": "mock", "id": "bad-1", "fail_rate": 1.0,
                    "mock": {"fail_kind": "unavailable"}}],
        "routing": {"*": {"num_retries": 0}},
        "circuit_breaker": {"failures": 2, "window_s": 30, "cooldown_s": 30},
        **extra,
    }


def test_all_healthy(tmp_path: Any) -> None:
    with running_gateway(config(tmp_path)) as gw:
        status, body = gw.ready()
    assert status == 200 and body["status"] == "ok"
    checks = body["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["breaker:good-1"]["status"] == "ok" and checks["breaker:bad-1"]["status"] == "ok"
    assert checks["deployments"]["status"] == "ok"


def test_an_open_breaker_degrades_and_every_breaker_open_is_a_503(tmp_path: Any) -> None:
    cfg = config(tmp_path)
    cfg["models"][0].update(fail_rate=1.0, mock={"fail_kind": "unavailable"})
    with running_gateway(cfg) as gw:
        for _ in range(3):
            chat(gw, "bad")
        status, body = gw.ready()
        assert status == 200 and body["status"] == "degraded"
        assert body["checks"]["breaker:bad-1"] == {"status": "down", "detail": "open"}
        assert body["checks"]["breaker:good-1"]["status"] == "ok"
        assert body["checks"]["deployments"]["status"] == "degraded"
        metrics = requests.get(gw.url + "/metrics", timeout=5).text
        assert 'aigw_circuit_breaker_state{deployment="bad-1"} 2.0' in metrics
        for _ in range(3):
            chat(gw, "good")
        status, body = gw.ready()
    assert status == 503 and body["status"] == "down", body
    assert body["checks"]["deployments"]["status"] == "down"


def test_redis_is_reported(tmp_path: Any, redis_isolated: tuple[str, str]) -> None:
    url, prefix = redis_isolated
    with running_gateway(config(tmp_path, redis_url=url, redis_prefix=prefix)) as gw:
        status, body = gw.ready()
    assert status == 200 and body["checks"]["redis"]["status"] == "ok"
