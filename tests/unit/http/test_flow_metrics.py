"""What /metrics shows for requests the HTTP layer refuses before the pipeline: counted, and timed from arrival."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aigw.app import build_app
from aigw.config.load import load_config
from aigw.http.server import GatewayApp

KEY = "sk-flow-metrics"
CHAT = orjson.dumps({"model": "mock", "messages": [{"role": "user", "content": "hi"}]})


UPLOAD_S = 0.3  # how long the test's client takes to send its body (over the 0.25 s bucket's bound)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[GatewayApp]:
    config = load_config()
    config.server.master_key = KEY
    config.server.max_body_bytes = 1000
    config.database_url = f"sqlite:///{tmp_path}/flow.db"
    config.observability.request_log.enabled = False
    config.observability.log_requests = False
    config.tenancy.enabled = False
    yield build_app(config)


async def call(app: GatewayApp, body: bytes, path: str = "/v1/chat/completions", key: str | None = KEY,
               body_takes_s: float = 0.0) -> int:
    """POST ``body``; the client takes ``body_takes_s`` to send it (really: ``time.monotonic`` is not patched,
    as that would stop the clocks of gateways other tests run on background threads)."""
    headers = [(b"content-type", b"application/json")]
    if key is not None:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"", "headers": headers}
    inbox = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if body_takes_s:
            await asyncio.sleep(body_takes_s)
        return inbox.pop() if inbox else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


def samples(app: GatewayApp, name: str, **labels: str) -> float:
    text = app.state["observability"].metrics.render().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


async def test_a_refused_body_is_timed_from_the_requests_arrival(app: GatewayApp) -> None:
    assert await call(app, b"{not json", body_takes_s=UPLOAD_S) == 400
    assert samples(app, "aigw_requests_total", status="400") == 1
    assert samples(app, "aigw_request_duration_seconds_sum", outcome="error") >= UPLOAD_S
    assert samples(app, "aigw_request_duration_seconds_bucket", outcome="error", le="0.25") == 0


async def test_an_answered_request_counts_its_body_upload_too(app: GatewayApp) -> None:
    assert await call(app, CHAT, body_takes_s=UPLOAD_S) == 200
    assert samples(app, "aigw_request_duration_seconds_sum", outcome="ok", model="mock") >= UPLOAD_S


@pytest.mark.parametrize("key", [None, "sk-not-a-key-anyone-issued"])
async def test_a_request_refused_for_its_key_is_counted_with_the_gateways_own_labels(
        app: GatewayApp, key: str | None) -> None:
    # a made-up model and key must not become label values: one series however many a client sends
    for i in range(3):
        body = orjson.dumps({"model": f"made-up-{i}", "messages": []})
        assert await call(app, body, key=key) == 401
    labels = {"api": "openai", "model": "none", "provider": "none", "deployment": "none", "status": "401"}
    assert samples(app, "aigw_requests_total", **labels) == 3
    assert samples(app, "aigw_request_duration_seconds_count", model="none", outcome="error") == 3
    assert samples(app, "aigw_rejections_total", model="none", reason="auth") == 3
    assert samples(app, "aigw_requests_total", model="other") == 0


async def test_an_anthropic_client_refused_for_its_key_is_counted_under_its_api(app: GatewayApp) -> None:
    assert await call(app, CHAT, path="/v1/messages", key="sk-wrong") == 401
    assert samples(app, "aigw_requests_total", api="anthropic", status="401", model="none") == 1


async def test_an_unknown_route_is_counted(app: GatewayApp) -> None:
    assert await call(app, CHAT, path="/v1/chat/complete") == 404
    assert await call(app, CHAT, path="/v1/chat/complete/../../etc") == 404
    labels = {"api": "none", "model": "none", "provider": "none", "deployment": "none", "status": "404"}
    assert samples(app, "aigw_requests_total", **labels) == 2
    assert samples(app, "aigw_request_duration_seconds_count", api="none", outcome="error") == 2
    assert samples(app, "aigw_rejections_total") == 0  # not the gateway refusing a caller: nothing to call


async def test_a_body_over_the_limit_from_a_known_caller_is_counted(app: GatewayApp) -> None:
    assert await call(app, b"{" + b" " * 2000 + b"}", body_takes_s=UPLOAD_S) == 413
    assert samples(app, "aigw_requests_total", status="413", model="none") == 1
    assert samples(app, "aigw_request_duration_seconds_sum", outcome="error") >= UPLOAD_S
