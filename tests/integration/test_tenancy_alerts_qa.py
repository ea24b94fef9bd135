"""Budget alerts as an operator sees them on a served gateway: once per window at 50, 80 and 100 % of a key's
budget (a warning line, ``aigw_events_total{event="budget_alert"}``, the webhook's JSON event), never again in
the same window, again in the next one; a webhook that hangs or fails never holds a call up."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import requests
from aiohttp import web

from aigw.cli.admin_client import AdminClient
from tests.integration.tenancy_support import MASTER, gateway_config, key_spend, setup_key
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.servers import start_aiohttp_app
from tests.support.services import RUN_ID, delete_redis_prefix, pg_execute, postgres_dsn, redis_prefix, redis_url

# $1000 / $2000 per million tokens; ``max_output_tokens: 1`` reserves one output token while the mock writes
# about fifteen, so a call settles well above its reservation and spend can reach 100 % of a budget
OVERSHOOT = {"name": "mock", "provider": "mock", "max_output_tokens": 1,
             "prices": {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}}
ASK: Any = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}


class Receiver:
    """A loopback webhook receiver: what it got, and how it answers (``status``, ``hold_s`` before answering)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.status = 204
        self.hold_s = 0.0
        self.lock = threading.Lock()

    async def receive(self, request: web.Request) -> web.Response:
        event = await request.json()
        with self.lock:
            self.events.append(event)
            self.headers.append(dict(request.headers))
        if self.hold_s:
            await asyncio.sleep(self.hold_s)
        return web.Response(status=self.status)

    def of(self, key_id: str, within: float = 3.0, at_least: int = 0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while True:
            with self.lock:
                got = [e for e in self.events if e["id"] == key_id]
            if len(got) >= at_least or time.monotonic() > deadline:
                return got
            time.sleep(0.02)


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[str, Receiver]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.receive)
    server = start_aiohttp_app(app, "alerts-qa-hook")
    yield server.url + "/hook", rec
    server.stop()


def _events_total(gw: RunningGateway) -> float:
    text = requests.get(gw.url + "/metrics", headers={"authorization": f"Bearer {MASTER}"}, timeout=5).text
    m = re.search(r'^aigw_events_total\{event="budget_alert"\} ([0-9.]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def _spend_until_refused(client: openai.OpenAI, most: int = 10) -> int:
    for n in range(most):
        try:
            client.chat.completions.create(**ASK)
        except openai.RateLimitError as err:
            assert err.code == "budget_exceeded"
            return n
    raise AssertionError("the budget never refused a call")


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_alerts_fire_once_per_window_at_each_threshold_and_again_in_the_next_day(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        receiver: tuple[str, Receiver], store: str, request: pytest.FixtureRequest) -> None:
    from aigw.types import SystemClock

    offset = [0.0]
    monkeypatch.setattr(SystemClock, "now", lambda self: time.time() + offset[0])

    def at(iso: str) -> None:
        offset[0] = dt.datetime.fromisoformat(iso).replace(tzinfo=dt.UTC).timestamp() - time.time()

    url, rec = receiver
    cfg = gateway_config(tmp_path / "gw.db", models=[OVERSHOOT])
    cfg["tenancy"]["alert_webhook"] = url
    if store == "redis":
        prefix = redis_prefix("alerts-qa")
        cfg.update(redis_url=redis_url(), redis_prefix=prefix)
        request.addfinalizer(lambda: delete_redis_prefix(prefix))
    caplog.set_level(logging.WARNING, "aigw.budget")
    at("2027-03-10T09:00:00")
    with running_gateway(cfg) as gw:
        key = setup_key(AdminClient(gw.url, MASTER), "alerts-qa", budget_usd=0.1, budget_period="daily")
        client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
        assert _spend_until_refused(client) >= 2
        day1 = rec.of(key["id"], at_least=3)
        assert sorted(e["threshold"] for e in day1) == [0.5, 0.8, 1.0]
        for e in day1:
            assert {k: e[k] for k in ("type", "scope", "tenant_id", "budget_usd", "period", "window")} == {
                "type": "budget.threshold", "scope": "key", "tenant_id": key["tenant_id"], "budget_usd": 0.1,
                "period": "daily", "window": "2027-03-10"}
            assert e["event_id"].startswith("evt_") and e["request_id"]
        assert len({e["event_id"] for e in day1}) == 3
        assert all(h["Content-Type"].startswith("application/json") for h in rec.headers)  # unsigned: as documented
        lines = [r.getMessage() for r in caplog.records if r.name == "aigw.budget" and key["id"] in r.getMessage()]
        assert len(lines) == 3 and any("reached 100%" in line for line in lines)
        assert _events_total(gw) == 3
        # refused calls and more refusals in the same window alert nothing again
        _spend_until_refused(client)
        time.sleep(0.3)
        assert len(rec.of(key["id"], within=0)) == 3 and _events_total(gw) == 3

        at("2027-03-11T09:00:00")  # a new daily window: the budget is whole again, and alerts again
        assert _spend_until_refused(client) >= 2
        day2 = [e for e in rec.of(key["id"], at_least=6) if e["window"] == "2027-03-11"]
        assert sorted(e["threshold"] for e in day2) == [0.5, 0.8, 1.0]
        assert _events_total(gw) == 6


def test_a_webhook_that_hangs_holds_no_call_up(tmp_path: Path, receiver: tuple[str, Receiver]) -> None:
    url, rec = receiver
    cfg = gateway_config(tmp_path / "gw.db", models=[OVERSHOOT])
    cfg["tenancy"]["alert_webhook"] = url
    rec.hold_s = 3.0
    try:
        with running_gateway(cfg) as gw:
            key = setup_key(AdminClient(gw.url, MASTER), "alerts-hang", budget_usd=0.1, budget_period="daily")
            client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
            for _ in range(3):
                started = time.monotonic()
                client.chat.completions.create(**ASK)
                assert time.monotonic() - started < 2.0
            assert len(rec.of(key["id"], at_least=3)) == 3
    finally:
        rec.hold_s = 0.0


def test_a_restart_does_not_alert_again_what_was_passed_before_it(tmp_path: Path,
                                                                  receiver: tuple[str, Receiver]) -> None:
    url, rec = receiver
    cfg = gateway_config(tmp_path / "gw.db", models=[OVERSHOOT])
    cfg["tenancy"]["alert_webhook"] = url
    with running_gateway(cfg) as gw:
        key = setup_key(AdminClient(gw.url, MASTER), "alerts-restart", budget_usd=0.12, budget_period="daily")
        client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
        client.chat.completions.create(**ASK)
        client.chat.completions.create(**ASK)  # $0.04 a call: past 50 %, under 80 %
        key_spend(AdminClient(gw.url, MASTER), key["id"], requests=2)  # $0.08 of $0.12, in the ledger
        assert [e["threshold"] for e in rec.of(key["id"], at_least=1)] == [0.5]
    with running_gateway(cfg) as again:
        client = openai.OpenAI(base_url=again.v1, api_key=key["key"], max_retries=0)
        _spend_until_refused(client)
        got = rec.of(key["id"], at_least=3)
        assert sorted(e["threshold"] for e in got) == [0.5, 0.8, 1.0]


@pytest.mark.parametrize("failure", ["503", "timeout"])
def test_a_webhook_that_keeps_failing_is_given_up_and_logged_as_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        receiver: tuple[str, Receiver], failure: str) -> None:
    import aigw.tenancy

    monkeypatch.setattr(aigw.tenancy, "WEBHOOK_TRIES", 2)  # one wait of a second, not seven
    monkeypatch.setattr(aigw.tenancy, "WEBHOOK_TIMEOUT_S", 0.3)
    url, rec = receiver
    cfg = gateway_config(tmp_path / "gw.db", models=[OVERSHOOT])
    cfg["tenancy"]["alert_webhook"] = url
    caplog.set_level(logging.WARNING, "aigw")
    if failure == "503":
        rec.status = 503
    else:
        rec.hold_s = 1.0
    try:
        with running_gateway(cfg) as gw:
            key = setup_key(AdminClient(gw.url, MASTER), "alerts-fail", budget_usd=0.1, budget_period="daily")
            client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
            client.chat.completions.create(**ASK)
            started = time.monotonic()
            client.chat.completions.create(**ASK)  # 50 %: its webhook fails twice
            assert time.monotonic() - started < 1.0
            assert len(rec.of(key["id"], at_least=2)) == 2
            deadline = time.monotonic() + 3
            while not [r for r in caplog.records if r.levelno == logging.ERROR and "gave up" in r.getMessage()]:
                assert time.monotonic() < deadline, "the given-up delivery was never logged"
                time.sleep(0.05)
            line = next(r.getMessage() for r in caplog.records if "gave up" in r.getMessage())
            assert key["id"] in line and "50%" in line
    finally:
        rec.status, rec.hold_s = 204, 0.0


def test_an_alert_still_being_delivered_at_shutdown_is_logged_as_not_delivered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        receiver: tuple[str, Receiver]) -> None:
    """Shutdown waits a while for background tasks, then cancels them: a webhook cut short there is lost
    like one that gave up, and is said so (it used to vanish without a word)."""
    from aigw.supervise import Supervisor

    monkeypatch.setattr(Supervisor.drain, "__defaults__", (0.3,))  # the grace before cancelling: 10 s
    url, rec = receiver
    cfg = gateway_config(tmp_path / "gw.db", models=[OVERSHOOT])
    cfg["tenancy"]["alert_webhook"] = url
    caplog.set_level(logging.WARNING, "aigw")
    rec.hold_s = 3.0  # the receiver takes the event and does not answer before the gateway stops
    try:
        with running_gateway(cfg) as gw:
            key = setup_key(AdminClient(gw.url, MASTER), "alerts-stop", budget_usd=0.12, budget_period="daily")
            client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
            client.chat.completions.create(**ASK)
            client.chat.completions.create(**ASK)  # $0.08 of $0.12: 50 %
            assert len(rec.of(key["id"], at_least=1)) == 1
    finally:
        rec.hold_s = 0.0
    lost = [r for r in caplog.records if r.levelno == logging.ERROR and key["id"] in r.getMessage()]
    assert len(lost) == 1 and "50%" in lost[0].getMessage() and "not delivered" in lost[0].getMessage()


def test_a_call_across_midnight_alerts_in_the_day_it_was_reserved_in_and_the_new_day_alerts_afresh(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: tuple[str, Receiver]) -> None:
    from aigw.types import SystemClock

    offset = [0.0]
    monkeypatch.setattr(SystemClock, "now", lambda self: time.time() + offset[0])

    def at(iso: str) -> None:
        offset[0] = dt.datetime.fromisoformat(iso).replace(tzinfo=dt.UTC).timestamp() - time.time()

    url, rec = receiver
    cfg = gateway_config(tmp_path / "gw.db", models=[OVERSHOOT, {**OVERSHOOT, "name": "mock-1s", "latency_ms": 1000}])
    cfg["tenancy"]["alert_webhook"] = url
    at("2027-05-04T12:00:00")
    with running_gateway(cfg) as gw:
        key = setup_key(AdminClient(gw.url, MASTER), "alerts-seam", budget_usd=0.12, budget_period="daily")
        client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
        client.chat.completions.create(**ASK)  # $0.04 of $0.12
        at("2027-05-04T23:59:59.5")
        client.chat.completions.create(**{**ASK, "model": "mock-1s"})  # reserved on the 4th, settled on the 5th
        got = rec.of(key["id"], at_least=1)
        assert [(e["threshold"], e["window"]) for e in got] == [(0.5, "2027-05-04")]
        client.chat.completions.create(**ASK)
        client.chat.completions.create(**ASK)  # $0.08 of the 5th's $0.12
        fresh = [e for e in rec.of(key["id"], at_least=2) if e["window"] == "2027-05-05"]
        assert [e["threshold"] for e in fresh] == [0.5]


def test_two_replicas_on_one_redis_alert_each_threshold_once(tmp_path: Path, receiver: tuple[str, Receiver],
                                                             request: pytest.FixtureRequest) -> None:
    """Each replica settles calls of the same key; a threshold is one ``SET NX`` in Redis, so the receiver
    gets each alert once, whichever replica's call crossed it."""
    dsn, schema = postgres_dsn(), f"aigw_test_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    prefix = redis_prefix("alerts-replicas")
    asyncio.run(pg_execute(dsn, f'CREATE SCHEMA "{schema}"'))
    request.addfinalizer(lambda: asyncio.run(pg_execute(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')))
    request.addfinalizer(lambda: delete_redis_prefix(prefix))
    url, rec = receiver
    cfg = gateway_config(tmp_path / "unused.db", models=[OVERSHOOT], database_url=f"{dsn}?search_path={schema}",
                         redis_url=redis_url(), redis_prefix=prefix)
    cfg["tenancy"].update(migrate_on_start=True, alert_webhook=url,
                          ledger={"flush_interval_s": 0.05, "spill_file": str(tmp_path / "spill.jsonl")})
    with running_gateway(cfg) as one, running_gateway(cfg) as two:
        key = setup_key(AdminClient(one.url, MASTER), "alerts-replicas", budget_usd=0.1, budget_period="daily")
        clients = [openai.OpenAI(base_url=g.v1, api_key=key["key"], max_retries=0) for g in (one, two, one, two)]
        for client in clients:
            try:
                client.chat.completions.create(**ASK)
            except openai.RateLimitError as err:
                assert err.code == "budget_exceeded"
        got = rec.of(key["id"], at_least=3)
        time.sleep(0.3)
        assert sorted(e["threshold"] for e in rec.of(key["id"], within=0)) == [0.5, 0.8, 1.0]
        assert _events_total(one) + _events_total(two) == 3 and len(got) == 3


def test_streamed_calls_alert_as_their_settles_cross_the_thresholds(tmp_path: Path,
                                                                   receiver: tuple[str, Receiver]) -> None:
    url, rec = receiver
    cfg = gateway_config(tmp_path / "gw.db", models=[OVERSHOOT])
    cfg["tenancy"]["alert_webhook"] = url
    with running_gateway(cfg) as gw:
        key = setup_key(AdminClient(gw.url, MASTER), "alerts-streams", budget_usd=0.12, budget_period="daily")
        oai = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
        ant = anthropic.Anthropic(base_url=gw.url, api_key=key["key"], max_retries=0)
        list(oai.chat.completions.create(**ASK, stream=True))
        list(oai.chat.completions.create(**ASK, stream=True))  # $0.08 of $0.12: 50 %
        assert [e["threshold"] for e in rec.of(key["id"], at_least=1)] == [0.5]
        with ant.messages.stream(model="mock", max_tokens=30, messages=ASK["messages"]) as events:
            for _ in events:
                pass
        assert sorted(e["threshold"] for e in rec.of(key["id"], at_least=3)) == [0.5, 0.8, 1.0]


def test_a_budget_raised_mid_window_alerts_again_at_its_own_thresholds(tmp_path: Path,
                                                                       receiver: tuple[str, Receiver]) -> None:
    url, rec = receiver
    cfg = gateway_config(tmp_path / "gw.db", models=[OVERSHOOT])
    cfg["tenancy"]["alert_webhook"] = url
    with running_gateway(cfg) as gw:
        admin = AdminClient(gw.url, MASTER)
        key = setup_key(admin, "alerts-raised", budget_usd=0.12, budget_period="daily")
        client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
        client.chat.completions.create(**ASK)
        client.chat.completions.create(**ASK)  # $0.08 of $0.12: 50 %
        assert [e["threshold"] for e in rec.of(key["id"], at_least=1)] == [0.5]
        admin.patch(f"/admin/keys/{key['id']}", {"budget_usd": 0.2})
        time.sleep(0.6)  # every replica's key cache has the new amount (key_refresh_s: 0.25)
        assert len(rec.of(key["id"], within=0)) == 1  # $0.08 of $0.20 is under 50 %: nothing at the change
        _spend_until_refused(client)  # $0.12, $0.16, $0.20 of $0.20
        raised = [e for e in rec.of(key["id"], at_least=4) if e["budget_usd"] == 0.2]
        assert sorted(e["threshold"] for e in raised) == [0.5, 0.8, 1.0]
