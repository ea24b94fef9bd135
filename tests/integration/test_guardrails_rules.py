"""Rules through the gateway: free answers (plain and streamed, both APIs), routes and rejects."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator

import anthropic
import openai
import pytest

from aigw.cli.admin_client import AdminClient
from tests.integration.conftest import Upstreams
from tests.integration.guardrails_support import (
    MASTER,
    ScriptedUpstream,
    ask,
    claude,
    gateway_config,
    logged,
    metric_lines,
    oai,
    scripted_server,  # noqa: F401  (fixture)
)
from tests.integration.tenancy_support import setup_key
from tests.support.gateway import RunningGateway, running_gateway

RULES = [
    {"name": "ping", "match": {"regex": "(?i)^ping$"}, "respond": "pong"},
    {"name": "hours", "match": {"keywords": ["opening", "hours"], "keywords_mode": "all"},
     "template": "We are open 9-17. (asked {model})"},
    {"name": "cheap", "match": {"model": "oai", "keywords": ["cheaply"]}, "route": "claude"},
    {"name": "no-dumps", "match": {"keywords": ["password dump"]}, "reject": "Not from this API."},
]


@pytest.fixture(scope="module")
def gw(upstreams: Upstreams, scripted_server: ScriptedUpstream,  # noqa: F811
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = tmp_path_factory.mktemp("rules") / "gw.db"
    with running_gateway(gateway_config(upstreams, scripted_server, db, {"rules": RULES})) as gw:
        gw.db = db  # type: ignore[attr-defined]
        yield gw


def ledger_row(gw: RunningGateway, request_id: str) -> tuple[str, int]:
    """(handled_by, cost_nano) of the spend ledger's row for one request (waits for the ledger's flush)."""
    deadline = time.monotonic() + 5
    while True:
        with sqlite3.connect(gw.db) as db:  # type: ignore[attr-defined]
            row = db.execute("SELECT handled_by, cost_nano FROM spend_ledger WHERE request_id = ?",
                             (request_id,)).fetchone()
        if row is not None or time.monotonic() > deadline:
            assert row is not None
            return row[0], row[1]
        time.sleep(0.03)


def no_upstream_calls(ups: Upstreams) -> bool:
    return ups.openai.traffic.requests == 0 and ups.anthropic.traffic.requests == 0


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_rule_answers_in_the_clients_format_without_an_upstream(gw: RunningGateway, ups: Upstreams, api: str,
                                                                  stream: bool) -> None:
    assert ask(api, gw, "oai", "ping", stream) == "pong"
    assert ask(api, gw, "claude", "what are your opening hours?", stream) == "We are open 9-17. (asked claude)"
    assert no_upstream_calls(ups)


def test_handled_by_header_log_cost_and_metrics(gw: RunningGateway, ups: Upstreams) -> None:
    rid = "req_rules_" + uuid.uuid4().hex[:8]
    raw = oai(gw).chat.completions.with_raw_response.create(
        model="oai", messages=[{"role": "user", "content": "ping"}], extra_headers={"x-request-id": rid})
    assert raw.headers["x-aigw-handled-by"] == "rules" and raw.headers["x-aigw-rule"] == "ping"
    assert raw.parse().usage is not None and raw.parse().usage.total_tokens == 0  # type: ignore[union-attr]
    araw = claude(gw).messages.with_raw_response.create(
        model="claude", max_tokens=50, messages=[{"role": "user", "content": "ping"}])
    assert araw.headers["x-aigw-handled-by"] == "rules"
    with oai(gw).chat.completions.with_streaming_response.create(
            model="oai", messages=[{"role": "user", "content": "ping"}], stream=True) as sraw:
        assert sraw.headers["x-aigw-handled-by"] == "rules"
    assert ledger_row(gw, rid) == ("rules", 0)
    record = logged(gw, rid)
    assert record["cache"] == "rules" and record["cost_usd"] == 0 and record["provider"] == ""
    assert record["guardrails"]["rules"]["action"] == "respond"
    lines = metric_lines(gw, "aigw_requests_total")
    assert any('provider="rules"' in x and 'model="oai"' in x for x in lines)
    assert no_upstream_calls(ups)


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_route_rule_sends_the_request_to_another_model(gw: RunningGateway, ups: Upstreams, api: str) -> None:
    answer = ask(api, gw, "oai", "answer this cheaply please", stream=False)
    assert answer == "echo: answer this cheaply please"  # the fake Anthropic's echo
    assert ups.openai.traffic.requests == 0 and ups.anthropic.traffic.requests == 1


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_route_rule_never_sends_a_key_to_a_model_it_may_not_use(gw: RunningGateway, ups: Upstreams,
                                                                  api: str) -> None:
    """A key limited to ``oai`` (its data may go there only) is refused with a 403, not served by ``claude``."""
    key = setup_key(AdminClient(gw.url, MASTER), "rules-" + uuid.uuid4().hex[:6], models=["oai"])["key"]
    if api == "openai":
        with pytest.raises(openai.PermissionDeniedError) as err:
            openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0).chat.completions.create(
                model="oai", messages=[{"role": "user", "content": "answer this cheaply please"}])
    else:
        with pytest.raises(anthropic.PermissionDeniedError) as err:  # type: ignore[assignment]
            anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0).messages.create(
                model="oai", max_tokens=50, messages=[{"role": "user", "content": "answer this cheaply please"}])
    assert "claude" in str(err.value)
    assert no_upstream_calls(ups)
    assert openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0).chat.completions.create(
        model="oai", messages=[{"role": "user", "content": "hello"}]).choices[0].message.content


def test_a_reject_rule_is_a_400_in_both_apis(gw: RunningGateway, ups: Upstreams) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        ask("openai", gw, "oai", "send me the password dump", stream=True)
    assert "Not from this API." in str(err.value)
    with pytest.raises(anthropic.BadRequestError) as aerr:
        ask("anthropic", gw, "claude", "send me the password dump", stream=False)
    assert "Not from this API." in str(aerr.value)
    assert no_upstream_calls(ups)
