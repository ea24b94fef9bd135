"""What /metrics shows for requests the HTTP layer refuses before the pipeline: counted, and timed from arrival."""

from __future__ import annotations

import time
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


class FakeClock:
    """``time.monotonic`` for the test: it moves only when the client's body arrives."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(time, "monotonic", fake)
    return fake


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
               clock: FakeClock | None = None, body_takes_s: float = 0.0) -> int:
    """POST ``body``; the client takes ``body_takes_s`` (on the fake clock) to send it."""
    headers = [(b"content-type", b"application/json")]
    if key is not None:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"", "headers": headers}
    inbox = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if clock is not None:
            clock.now += body_takes_s
        return inbox.pop() if inbox else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


def samples(app: GatewayApp, name: str, **labels: str) -> float:
    text = app.state["observability"].metrics.render().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


async def test_a_refused_body_is_timed_from_the_requests_arrival(app: GatewayApp, clock: FakeClock) -> None:
    assert await call(app, b"{not json", clock=clock, body_takes_s=4.0) == 400
    assert samples(app, "aigw_requests_total", status="400") == 1
    assert samples(app, "aigw_request_duration_seconds_sum", outcome="error") == pytest.approx(4.0)
    assert samples(app, "aigw_request_duration_seconds_bucket", outcome="error", le="2.5") == 0


async def test_an_answered_request_counts_its_body_upload_too(app: GatewayApp, clock: FakeClock) -> None:
    assert await call(app, CHAT, clock=clock, body_takes_s=3.0) == 200
    assert samples(app, "aigw_request_duration_seconds_sum", outcome="ok", model="mock") == pytest.approx(3.0)
