"""What /metrics shows when a caller is refused outside the pipeline (admin API, model list, count_tokens, /metrics
itself): ``aigw_auth_failures_total`` by route group and status, so that someone guessing the master key or an
admin key shows, with label values that are the gateway's own whatever the client sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aigw.app import build_app
from aigw.config.load import load_config
from aigw.http.server import GatewayApp
from aigw.stores.keygen import new_secret
from tests.support.asgi_calls import call_app

MASTER = "sk-auth-failures-master"
COUNT = orjson.dumps({"model": "mock", "messages": [{"role": "user", "content": "hi"}]})
GROUPS = {"inference", "admin", "models", "count_tokens", "metrics"}
# (method, path, body) of one route in each group outside the pipeline
ROUTES = {
    "admin": [("GET", "/admin/keys", b""), ("POST", "/admin/tenants", b'{"name": "t"}'),
              ("GET", "/admin/deployments", b""), ("GET", "/admin/requests", b""), ("GET", "/admin/spend", b"")],
    "models": [("GET", "/v1/models", b""), ("GET", "/v1/models/mock", b"")],
    "count_tokens": [("POST", "/v1/messages/count_tokens", COUNT)],
    "metrics": [("GET", "/metrics", b"")],
}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[GatewayApp]:
    config = load_config()
    config.server.master_key = MASTER
    config.database_url = f"sqlite:///{tmp_path}/auth.db"
    config.observability.log_requests = False
    config.observability.metrics.require_key = True
    config.tenancy.enabled = True
    config.tenancy.ledger.writer = "thread"
    app = build_app(config)
    try:
        for start in app.on_startup:
            await start()
        yield app
    finally:
        for stop in reversed(app.on_shutdown):
            await stop()


async def call(app: GatewayApp, method: str, path: str, body: bytes = b"", key: str | None = None,
               header: bytes = b"authorization") -> tuple[int, Any]:
    headers = {} if key is None else {header.decode(): f"Bearer {key}" if header == b"authorization" else key}
    status, _, answer = await call_app(app, method, path, body, headers)
    return status, answer


def by_reason(app: GatewayApp) -> dict[tuple[str, str, str], float]:
    """Every ``aigw_auth_failures_total`` series, by (route_group, status, reason), read as a scraper would."""
    text = app.state["observability"].metrics.render().decode()
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "aigw_auth_failures_total":
                assert set(s.labels) == {"route_group", "status", "reason"}
                out[s.labels["route_group"], s.labels["status"], s.labels["reason"]] = s.value
    return out


def failures(app: GatewayApp) -> dict[tuple[str, str], float]:
    """The same, summed by (route_group, status)."""
    out: dict[tuple[str, str], float] = {}
    for (group, status, _), value in by_reason(app).items():
        out[group, status] = out.get((group, status), 0.0) + value
    return out


async def plain_key(app: GatewayApp, models: list[str] | None = None) -> str:
    """A working key that is no admin key (for ``models`` only, if given), made through the admin API."""
    status, tenant = await call(app, "POST", "/admin/tenants", b'{"name": "acme"}', MASTER)
    assert status == 201
    status, project = await call(app, "POST", "/admin/projects",
                                 orjson.dumps({"name": "web", "tenant": tenant["id"]}), MASTER)
    assert status == 201
    status, key = await call(app, "POST", "/admin/keys", orjson.dumps({"project": project["id"], "models": models}),
                            MASTER)
    assert status == 201
    return str(key["key"])


async def test_every_series_is_there_at_zero_before_any_failure(app: GatewayApp) -> None:
    # so that `increase(...) > 0` alerts on the very first guess
    series = failures(app)
    assert set(series) == {(g, s) for g in GROUPS for s in ("401", "403", "503")} - {("inference", "403")}
    assert set(series.values()) == {0.0}


@pytest.mark.parametrize("group", sorted(ROUTES))
@pytest.mark.parametrize("key", [None, "sk-guessed-master-key"])
async def test_a_missing_or_wrong_key_is_counted_under_its_route_group(
        app: GatewayApp, group: str, key: str | None) -> None:
    for method, path, body in ROUTES[group]:
        assert (await call(app, method, path, body, key))[0] == 401, path
    series = failures(app)
    assert series[group, "401"] == len(ROUTES[group])
    assert sum(series.values()) == len(ROUTES[group])  # in no other group, and not as a 403
    # not shaped as a gateway key: refused with no database read
    assert by_reason(app)[group, "401", "missing" if key is None else "malformed"] == len(ROUTES[group])


async def test_an_anthropic_sdks_x_api_key_is_counted_too(app: GatewayApp) -> None:
    status, _ = await call(app, "GET", "/v1/models", key="sk-ant-guess", header=b"x-api-key")
    assert status == 401
    assert failures(app)["models", "401"] == 1


async def test_an_inference_401_is_counted_as_before_and_under_inference(app: GatewayApp) -> None:
    assert (await call(app, "POST", "/v1/chat/completions", COUNT, "sk-wrong"))[0] == 401
    series = failures(app)
    assert series["inference", "401"] == 1 and sum(series.values()) == 1


async def test_a_working_key_that_is_no_admin_key_is_a_403_on_admin_routes_and_metrics(app: GatewayApp) -> None:
    key = await plain_key(app)
    for method, path, body in ROUTES["admin"]:
        assert (await call(app, method, path, body, key))[0] == 403, path
    assert (await call(app, "GET", "/metrics", key=key))[0] == 403
    series = failures(app)
    assert series["admin", "403"] == len(ROUTES["admin"])
    assert series["metrics", "403"] == 1
    assert series["admin", "401"] == series["metrics", "401"] == 0
    assert by_reason(app)["admin", "403", "not_allowed"] == len(ROUTES["admin"])


async def test_an_unknown_key_and_a_revoked_one_are_counted_under_their_reasons(app: GatewayApp) -> None:
    key = await plain_key(app)
    status, listed = await call(app, "GET", "/admin/keys", key=MASTER)
    assert status == 200
    assert (await call(app, "POST", f"/admin/keys/{listed['data'][0]['id']}/revoke", key=MASTER))[0] == 200
    assert (await call(app, "GET", "/v1/models", key=key))[0] == 401
    assert (await call(app, "GET", "/v1/models", key=new_secret()))[0] == 401
    assert (await call(app, "POST", "/v1/chat/completions", COUNT, key))[0] == 401
    series = by_reason(app)
    assert series["models", "401", "refused"] == series["models", "401", "unknown"] == 1
    assert series["inference", "401", "refused"] == 1 and sum(series.values()) == 3


async def test_a_key_counting_tokens_for_a_model_it_may_not_use_is_a_403(app: GatewayApp) -> None:
    key = await plain_key(app, models=["mock"])
    other = orjson.dumps({"model": "mock-large", "messages": [{"role": "user", "content": "hi"}]})
    assert (await call(app, "POST", "/v1/messages/count_tokens", other, key))[0] == 403
    assert (await call(app, "POST", "/v1/messages/count_tokens", COUNT, key))[0] == 200
    assert failures(app)["count_tokens", "403"] == 1


async def test_callers_let_in_are_not_counted(app: GatewayApp) -> None:
    key = await plain_key(app)
    assert (await call(app, "GET", "/v1/models", key=key))[0] == 200
    assert (await call(app, "POST", "/v1/messages/count_tokens", COUNT, key))[0] == 200
    assert (await call(app, "GET", "/admin/deployments", key=MASTER))[0] == 200
    assert (await call(app, "GET", "/metrics", key=MASTER))[0] == 200
    assert (await call(app, "GET", "/v1/models/no-such-model", key=key))[0] == 404  # not an auth failure
    assert sum(failures(app).values()) == 0


async def test_label_values_never_hold_what_the_client_sent(app: GatewayApp) -> None:
    # made-up paths under each group's prefix, and made-up keys: still one series per group and status
    for i in range(5):
        key = f"sk-attacker-{i}"
        await call(app, "DELETE", f"/admin/keys/key_attacker-{i}", key=key)
        await call(app, "GET", f"/v1/models/attacker-model-{i}", key=key)
        await call(app, "POST", "/v1/messages/count_tokens",
                   orjson.dumps({"model": f"attacker-model-{i}", "messages": []}), key)
    series = failures(app)
    assert series["admin", "401"] == series["models", "401"] == series["count_tokens", "401"] == 5
    assert {g for g, _ in series} == GROUPS and {s for _, s in series} == {"401", "403", "503"}
    text = app.state["observability"].metrics.render().decode()
    assert "attacker" not in text and "sk-" not in text
