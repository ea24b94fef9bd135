"""Building the router from config: costs for lowest_cost, shared state and probe only when asked."""

from __future__ import annotations

import pytest

from aigw.config.models import Deployment, GatewayConfig
from aigw.routing.router import RouteRequest, Target
from aigw.routing.setup import build_router, costs
from aigw.supervise import Supervisor
from tests.unit.routing.fakes import Scripted


def dep(name: str, model: str, i: int, **extra: object) -> Deployment:
    return Deployment.model_validate({"name": name, "provider": "mock", "model": model, "id": f"{name}#{i}", **extra})


def test_costs_come_from_the_shipped_table_and_config_prices_override_it() -> None:
    got = costs([dep("a", "gpt-4o-mini", 0), dep("a", "gpt-4o", 1),
                 dep("a", "gpt-4o", 2, prices={"output_per_mtok": 1.0}), dep("a", "home-made-llm", 3)])
    assert got["a#0"] == pytest.approx(0.15 + 0.6)
    assert got["a#1"] == pytest.approx(2.5 + 10.0)
    assert got["a#2"] == pytest.approx(2.5 + 1.0)
    assert got["a#3"] is None


async def test_lowest_cost_sends_everything_to_the_cheapest() -> None:
    deployments = [dep("m", "gpt-4o", 0), dep("m", "gpt-4o-mini", 1), dep("m", "home-made-llm", 2)]
    config = GatewayConfig.model_validate({"models": [d.model_dump() for d in deployments],
                                           "routing": {"m": {"strategy": "lowest_cost"}}})
    providers = [Scripted(d.model) for d in config.models]
    router = build_router(config, [Target(d, p) for d, p in zip(config.models, providers, strict=True)],
                          Supervisor())
    for _ in range(30):
        await router.complete(RouteRequest(model="m", body={"messages": []}))
    assert [p.calls for p in providers] == [0, 30, 0]


def test_no_redis_and_no_probe_means_no_background_work() -> None:
    config = GatewayConfig.model_validate({"models": [{"name": "m", "provider": "mock", "id": "m#0"}]})
    router = build_router(config, [Target(config.models[0], Scripted("m"))], Supervisor())
    assert router.book.shared is None and router._background == []
    config.circuit_breaker.probe_interval_s = 5
    router = build_router(config, [Target(config.models[0], Scripted("m"))], Supervisor())
    assert [name for name, _, _ in router._background] == ["routing-probe"]
