"""/metrics when a call is retried on another deployment: each attempt counts against the deployment that made it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aigw.app import build_app
from aigw.config.models import GatewayConfig
from aigw.http.server import GatewayApp
from tests.support.asgi_calls import call_app

KEY = "sk-attempt-metrics"
FAILING = {"fail_rate": 1.0, "mock": {"fail_kind": "unavailable"}}


def gateway(bad: dict[str, Any], strategy: str = "lowest_cost") -> GatewayApp:
    """Model ``m`` on two deployments: ``bad`` is the cheaper, so lowest_cost always tries it first."""
    return build_app(GatewayConfig.model_validate({
        "server": {"master_key": KEY},
        "models": [
            {"name": "m", "provider": "mock", "id": "bad", "prices": {"input_per_mtok": 0.1}, **bad},
            {"name": "m", "provider": "mock", "id": "good", "prices": {"input_per_mtok": 9.0}},
        ],
        "routing": {"m": {"strategy": strategy, "num_retries": 1, "backoff_s": 0}},
        "observability": {"request_log": {"enabled": False}, "log_requests": False},
        "tenancy": {"enabled": False},
    }))


async def chat(app: GatewayApp, **extra: Any) -> int:
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra})
    return (await call_app(app, "POST", "/v1/chat/completions", body, {"authorization": f"Bearer {KEY}"}))[0]


def value(app: GatewayApp, name: str, **labels: str) -> float:
    text = app.state["observability"].metrics.render().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.mark.parametrize("stream", [False, True])
async def test_a_retried_call_counts_the_failure_and_the_answer_each_against_its_deployment(stream: bool) -> None:
    app = gateway(FAILING)
    assert await chat(app, stream=stream) == 200
    attempts = "aigw_upstream_attempts_total"
    assert value(app, attempts, deployment="bad", model="m", provider="mock", outcome="unavailable") == 1
    assert value(app, attempts, deployment="good", model="m", provider="mock", outcome="ok") == 1
    assert value(app, attempts, deployment="bad", outcome="ok") == 0
    assert value(app, attempts, deployment="good") == 1
    latency = "aigw_upstream_duration_seconds_count"
    assert value(app, latency, deployment="bad", outcome="error") == 1
    assert value(app, latency, deployment="good", outcome="ok") == 1
    assert value(app, latency, deployment="good", outcome="error") == 0
    # the request itself: once, under the deployment that answered it
    assert value(app, "aigw_requests_total", deployment="good", status="200") == 1
    assert value(app, "aigw_requests_total", deployment="bad") == 0


async def test_a_request_no_deployment_could_answer_shows_each_failed_attempt() -> None:
    both_bad = build_app(GatewayConfig.model_validate({
        "server": {"master_key": KEY},
        "models": [{"name": "m", "provider": "mock", "id": d, **FAILING} for d in ("a", "b")],
        "routing": {"m": {"num_retries": 1, "backoff_s": 0}},
        "observability": {"request_log": {"enabled": False}, "log_requests": False},
        "tenancy": {"enabled": False},
    }))
    status = await chat(both_bad)
    assert status >= 500
    assert value(both_bad, "aigw_upstream_attempts_total", deployment="a", outcome="unavailable") == 1
    assert value(both_bad, "aigw_upstream_attempts_total", deployment="b", outcome="unavailable") == 1
    assert value(both_bad, "aigw_upstream_attempts_total", outcome="ok") == 0
    assert value(both_bad, "aigw_requests_total", status=str(status)) == 1


async def test_a_call_answered_first_time_is_one_ok_attempt() -> None:
    app = gateway({})
    assert await chat(app) == 200
    assert value(app, "aigw_upstream_attempts_total", deployment="bad", outcome="ok") == 1
    assert value(app, "aigw_upstream_attempts_total", deployment="good") == 0
    assert value(app, "aigw_upstream_duration_seconds_count", deployment="bad", outcome="ok") == 1
