"""A flood of made-up keys, as a client sees it: every one is a 401, the database is read at most within
``tenancy.unknown_key_reads_per_s`` (a secret not shaped as a key never), real keys keep working (one made
during the flood too, here or on another replica), and when the gateway cannot tell, a 503 (529 on the
Anthropic API) that says to retry; ``aigw_auth_failures_total`` counts each refusal with its reason."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
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

MASTER = "mk-key-flood-master"
BUDGET = 5
CHAT = orjson.dumps({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
MESSAGES = orjson.dumps({"model": "mock", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})


class Reads:
    """The database calls of one app's key lookups, counted."""

    def __init__(self, app: GatewayApp) -> None:
        self.grants = 0
        self.full = 0
        self.since = 0
        self.fail_hashes = False
        db = app.state["tenancy"].db
        grant_by_hash, key_hashes = db.grant_by_hash, db.key_hashes

        async def counted_grant(key_hash: str) -> Any:
            self.grants += 1
            return await grant_by_hash(key_hash)

        async def counted_hashes(since: float | None) -> Any:
            if self.fail_hashes:
                raise ConnectionError("database away")
            if since is None:
                self.full += 1
            else:
                self.since += 1
            return await key_hashes(since)

        db.grant_by_hash, db.key_hashes = counted_grant, counted_hashes


async def _started(db_file: Path, budget: float = BUDGET) -> GatewayApp:
    config = load_config()
    config.server.master_key = MASTER
    config.database_url = f"sqlite:///{db_file}"
    config.observability.log_requests = False
    config.tenancy.ledger.writer = "thread"
    config.tenancy.unknown_key_reads_per_s = budget
    app = build_app(config)
    for start in app.on_startup:
        await start()
    return app


async def _stopped(app: GatewayApp) -> None:
    for stop in reversed(app.on_shutdown):
        await stop()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[GatewayApp]:
    gateway = await _started(tmp_path / "flood.db")
    try:
        yield gateway
    finally:
        await _stopped(gateway)


async def chat(app: GatewayApp, key: str) -> tuple[int, dict[str, str], Any]:
    return await call_app(app, "POST", "/v1/chat/completions", CHAT, {"authorization": f"Bearer {key}"})


async def messages(app: GatewayApp, key: str) -> tuple[int, dict[str, str], Any]:
    return await call_app(app, "POST", "/v1/messages", MESSAGES, {"x-api-key": key, "anthropic-version": "2023-06-01"})


async def new_key(app: GatewayApp) -> str:
    """A working key made through the admin API (with its tenant and project)."""
    master = {"authorization": f"Bearer {MASTER}"}
    status, _, tenant = await call_app(app, "POST", "/admin/tenants", orjson.dumps({"name": new_secret()}), master)
    assert status == 201
    status, _, project = await call_app(app, "POST", "/admin/projects",
                                        orjson.dumps({"name": "web", "tenant": tenant["id"]}), master)
    assert status == 201
    status, _, key = await call_app(app, "POST", "/admin/keys", orjson.dumps({"project": project["id"]}), master)
    assert status == 201
    return str(key["key"])


def failures(app: GatewayApp) -> dict[tuple[str, str, str], float]:
    """``aigw_auth_failures_total`` by (route_group, status, reason), as a scraper reads it."""
    text = app.state["observability"].metrics.render().decode()
    return {(s.labels["route_group"], s.labels["status"], s.labels["reason"]): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == "aigw_auth_failures_total"}


async def flood(app: GatewayApp, n: int, send: Callable[..., Any] = chat) -> list[int]:
    return [(await send(app, new_secret()))[0] for _ in range(n)]


async def past_budget(app: GatewayApp, send: Callable[..., Any]) -> tuple[int, dict[str, str], Any]:
    """The first answer to an unknown key that is no 401 (the budget's reads spent first)."""
    for _ in range(4 * BUDGET):
        status, headers, body = await send(app, new_secret())
        if status != 401:
            return status, headers, body
    raise AssertionError("every unknown key was read")


def _malformed() -> list[str]:
    good = new_secret()
    return [good[:-1], good + "x", good[:-1] + "!", good[:-1] + "é", "sk-aigw-", good.replace("sk-aigw-", "sk-aigx-"),
            "sk-" + "a" * 48, "Bearer", "x" * 4000]


async def test_a_secret_not_shaped_as_a_key_is_a_401_with_no_database_read(app: GatewayApp) -> None:
    reads = Reads(app)
    for secret in _malformed():
        status, _, body = await chat(app, secret)
        assert status == 401 and body["error"]["code"] == "invalid_api_key", secret
        assert body["error"]["message"] == "Invalid API key."
        status, _, body = await messages(app, secret)
        assert status == 401 and body["error"]["type"] == "authentication_error"
    assert reads.grants == reads.full == reads.since == 0
    assert failures(app)["inference", "401", "malformed"] == 2 * len(_malformed())


async def test_a_flood_of_unknown_keys_costs_at_most_the_budgeted_reads(app: GatewayApp) -> None:
    reads = Reads(app)
    began = time.monotonic()
    statuses = await flood(app, 300)
    elapsed = time.monotonic() - began
    assert statuses == [401] * 300
    assert reads.grants <= BUDGET * (1 + elapsed) + 1, (reads.grants, elapsed)  # a second deep, refilled since
    assert reads.full == 1  # past the budget: the key hashes once, then only what changed
    series = failures(app)
    assert series["inference", "401", "unknown"] == 300 and series["inference", "401", "malformed"] == 0


async def test_keys_keep_working_during_a_flood_and_one_made_during_it_works_at_once(app: GatewayApp) -> None:
    used, unused = await new_key(app), await new_key(app)  # `unused`: not in this replica's key cache
    assert (await chat(app, used))[0] == 200
    reads = Reads(app)
    await flood(app, 3 * BUDGET)
    made_now = await new_key(app)
    for key in (used, unused, made_now):
        status, _, body = await chat(app, key)
        assert status == 200, body
        assert (await messages(app, key))[0] == 200
    assert reads.full == 1
    assert (await flood(app, 50)) == [401] * 50  # the flood goes on, answered from the set
    assert reads.grants <= BUDGET * 3 + 2  # the two uncached keys read once each, the flood within its budget


async def test_a_key_made_on_another_replica_works_there_within_a_second(tmp_path: Path) -> None:
    here = await _started(tmp_path / "shared.db")
    there = await _started(tmp_path / "shared.db", budget=0)  # every unknown key asks the set: no read for it
    try:
        reads = Reads(there)
        assert (await flood(there, 10)) == [401] * 10
        key = await new_key(here)
        made = time.monotonic()
        for _ in range(150):  # 3 s at most
            if (status := (await chat(there, key))[0]) != 401:
                break
            await asyncio.sleep(0.02)
        assert status == 200 and time.monotonic() - made < 1.0
        assert reads.full == 1 and reads.since >= 1
    finally:
        await _stopped(there)
        await _stopped(here)


async def test_when_the_gateway_cannot_tell_it_answers_503_with_retry_after(app: GatewayApp) -> None:
    reads = Reads(app)
    reads.fail_hashes = True  # the set cannot load
    status, headers, body = await past_budget(app, chat)
    assert status == 503 and headers["retry-after"] == "1"
    assert body["error"]["code"] == "key_lookups_throttled" and body["error"]["type"] == "service_unavailable_error"
    status, headers, body = await past_budget(app, messages)
    assert status == 529 and headers["retry-after"] == "1"
    assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
    series = failures(app)
    assert series["inference", "503", "throttled"] == 1 and series["inference", "529", "throttled"] == 1


async def test_every_reason_is_there_at_zero_from_the_start(app: GatewayApp) -> None:
    series = failures(app)
    assert {(s, r) for g, s, r in series if g == "admin"} == {
        ("401", "missing"), ("401", "malformed"), ("401", "unknown"), ("401", "refused"), ("403", "not_allowed"),
        ("503", "throttled")}
    assert set(series.values()) == {0.0}
