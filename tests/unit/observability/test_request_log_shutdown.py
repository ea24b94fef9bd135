"""The request log's retention pass and the gateway's shutdown: a pass the shutdown cuts short (the store
closed under it) is no failure, so it neither warns nor counts; a real failure still does both."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from aigw.config.models import GatewayConfig
from aigw.observability.request_log import MemoryRequestLog, RequestLogWriter
from tests.support.app_lifespan import start_and_stop
from tests.unit.observability.test_request_log import DAY0


def _errors(metrics: object) -> str:
    text = metrics.render().decode()  # type: ignore[attr-defined]
    return "\n".join(line for line in text.splitlines() if line.startswith("aigw_store_errors_total{"))


@pytest.mark.parametrize("writer", ["process", "thread"])
async def test_a_gateway_stopped_just_after_it_started_logs_no_retention_failure(
        tmp_path: Path, writer: str, caplog: pytest.LogCaptureFixture) -> None:
    """Started then stopped at once (a test, ``aigw serve`` then SIGTERM): the writer's first retention pass
    waited for the SQLite connection the shutdown was closing, then found it closed. It logged "request log
    retention failed: RuntimeError" and counted a store error."""
    from aigw.app import build_app

    config = GatewayConfig.model_validate({
        "database_url": f"sqlite:///{tmp_path}/aigw.db", "tenancy": {"enabled": False},
        "models": [{"name": "mock", "provider": "mock"}],
        "observability": {"request_log": {"enabled": True, "writer": writer}},
    })
    app = build_app(config)
    caplog.set_level(logging.DEBUG, "aigw.request_log")
    await start_and_stop(app)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [], warnings
    assert 'operation="retention"' not in _errors(app.state["deps"].services["metrics"])


class BrokenRetention(MemoryRequestLog):
    async def drop_before(self, day: int) -> int:
        raise PermissionError("no DROP for this role")


async def test_a_retention_pass_that_really_fails_still_warns_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    errors: list[str] = []
    w = RequestLogWriter(BrokenRetention(), now=lambda: DAY0, on_error=errors.append)
    with caplog.at_level(logging.WARNING, "aigw.request_log"):
        await w.enforce_retention()
    assert errors == ["retention"]
    assert [r.getMessage() for r in caplog.records] == ["request log retention failed: PermissionError"]
    await w.close()
    await w.enforce_retention()  # after the shutdown began: not tried, nothing more said or counted
    assert errors == ["retention"] and len(caplog.records) == 1


async def test_a_request_log_database_down_at_start_is_down_in_readiness() -> None:
    """PostgreSQL refusing connections when the gateway started: the request log fell back to memory and
    /health/ready pinged that memory store, so it said ``database: ok, select 1`` (and ``status: ok``) while
    no record could reach the database."""
    from aigw.app import build_app

    config = GatewayConfig.model_validate({
        "database_url": "postgresql://aigw:pw@127.0.0.1:1/aigw", "tenancy": {"enabled": False},
        "models": [{"name": "mock", "provider": "mock"}],
    })
    app = build_app(config)
    for start in app.on_startup:
        await start()
    try:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app.state["health"].ready(None, send)
        body = orjson.loads(sent[1]["body"])
        assert sent[0]["status"] == 200 and body["status"] == "degraded"
        assert body["checks"]["database"] == {"status": "down", "detail": "RequestLogNotOpened"}
    finally:
        for stop in reversed(app.on_shutdown):
            await stop()
