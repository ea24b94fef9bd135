"""Rate limits and budgets as each SDK sees them, against fake OpenAI and Anthropic upstreams on loopback: a
refusal is a 429 in the client's wire format with ``Retry-After`` and the rate headers under the client's names,
an exhausted budget is refused before any upstream call, every accepted call (streamed too) carries the
remaining-quota headers, and a streamed call's tokens settle the budget and the ``tpm`` window."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import anthropic
import openai
import pytest

from aigw.cli.admin_client import AdminClient
from tests.fakes.anthropic_upstream import AnthropicUpstream
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI
from tests.integration.cut_calls_support import IN, OUT, PRICES, settled
from tests.integration.tenancy_support import MASTER, gateway_config, key_spend, setup_key
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.servers import start_aiohttp_app
from tests.support.services import delete_redis_prefix, redis_prefix, redis_url

MSG: Any = [{"role": "user", "content": "tell me about the sea and the ships upon it"}]
OAI_RATE = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
            "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")
ANT_RATE = tuple(f"anthropic-ratelimit-{k}-{f}" for k in ("requests", "tokens") for f in ("limit", "remaining",
                                                                                           "reset"))


class Ups(NamedTuple):
    oai: FakeOpenAI
    ant: AnthropicUpstream
    ant_url: str


@pytest.fixture(scope="module")
def ups() -> Iterator[Ups]:
    oai = FakeOpenAI("sk-oai").start()
    ant = AnthropicUpstream()
    server = start_aiohttp_app(ant.app(), "fake-anthropic-qa")
    yield Ups(oai, ant, server.url)
    oai.stop()
    server.stop()


@pytest.fixture(scope="module", params=["memory", "redis"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
       ups: Ups) -> Iterator[RunningGateway]:
    """The gateway, its counters in process memory or in Redis (a prefix of its own, deleted afterwards)."""
    oai, ant, ant_url = ups
    db = tmp_path_factory.mktemp("wire-limits") / "gw.db"
    shared: dict[str, Any] = {}
    if request.param == "redis":
        shared = {"redis_url": redis_url(), "redis_prefix": redis_prefix("wire-limits")}
    models = [{"name": "oai", "provider": "openai", "model": "gpt-4o-mini", "api_base": oai.base_url,
               "api_key": "sk-oai", "prices": PRICES},
              {"name": "claude", "provider": "anthropic", "model": "claude-test-1",
               "api_base": ant_url, "api_key": ant.api_key, "prices": PRICES}]
    try:
        with running_gateway(gateway_config(db, models=models, routing={"*": {"num_retries": 0}},
                                            circuit_breaker={"enabled": False}, **shared)) as running:
            yield running
    finally:
        if shared:
            delete_redis_prefix(shared["redis_prefix"])


@pytest.fixture(autouse=True)
def _clean(ups: Ups) -> Iterator[None]:
    for fake in (ups.oai, ups.ant):
        fake.reset()
    yield
    for fake in (ups.oai, ups.ant):
        fake.reset()


def _admin(gw: RunningGateway) -> AdminClient:
    return AdminClient(gw.url, MASTER)


def _oai(gw: RunningGateway, key: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=2, timeout=10)


def _ant(gw: RunningGateway, key: dict[str, Any]) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key["key"], max_retries=2, timeout=10)


def test_an_exhausted_budget_is_refused_in_openais_format_before_any_upstream_call(
        gw: RunningGateway, ups: Ups) -> None:
    key = setup_key(_admin(gw), "wire-budget-oai", budget_usd=0.001, budget_period="daily")
    with pytest.raises(openai.RateLimitError) as err:  # 50 output tokens alone may cost $0.10
        _oai(gw, key).chat.completions.create(model="oai", messages=MSG, max_tokens=50)
    assert err.value.status_code == 429 and err.value.code == "budget_exceeded"
    assert err.value.type == "insufficient_quota"
    assert err.value.response.headers["x-should-retry"] == "false"
    assert ups.oai.traffic.requests == 0
    assert key_spend(_admin(gw), key["id"])["errors"] == 1  # one refusal: the SDK did not retry it


def test_an_exhausted_budget_is_refused_in_anthropics_format_before_any_upstream_call(
        gw: RunningGateway, ups: Ups) -> None:
    key = setup_key(_admin(gw), "wire-budget-ant", budget_usd=0.001, budget_period="daily")
    with pytest.raises(anthropic.RateLimitError) as err:
        _ant(gw, key).messages.create(model="claude", messages=MSG, max_tokens=50)
    assert err.value.status_code == 429
    body: Any = err.value.body
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "Budget exceeded for key" in body["error"]["message"]
    assert err.value.response.headers["x-should-retry"] == "false"
    assert ups.ant.traffic.requests == 0
    assert key_spend(_admin(gw), key["id"])["errors"] == 1


def test_an_anthropic_client_refused_on_rpm_gets_retry_after_and_both_header_sets(
        gw: RunningGateway, ups: Ups) -> None:
    key = setup_key(_admin(gw), "wire-rpm-ant", rpm=1, tpm=100_000)
    client = anthropic.Anthropic(base_url=gw.url, api_key=key["key"], max_retries=0, timeout=10)
    ok = client.messages.with_raw_response.create(model="claude", messages=MSG, max_tokens=20)
    assert all(h in ok.headers for h in ANT_RATE + OAI_RATE)
    assert ok.headers["anthropic-ratelimit-requests-remaining"] == "0"
    with pytest.raises(anthropic.RateLimitError) as err:
        client.messages.create(model="claude", messages=MSG, max_tokens=20)
    h = err.value.response.headers
    body: Any = err.value.body
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(h["retry-after"]) <= 60
    assert all(name in h for name in ANT_RATE + OAI_RATE)
    assert h["anthropic-ratelimit-requests-remaining"] == "0" and h["x-ratelimit-remaining-requests"] == "0"
    assert ups.ant.traffic.requests == 1


def test_an_openai_client_refused_on_tpm_gets_retry_after_and_the_six_headers(
        gw: RunningGateway, ups: Ups) -> None:
    key = setup_key(_admin(gw), "wire-tpm-oai", rpm=100, tpm=40)
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0, timeout=10)
    with pytest.raises(openai.RateLimitError) as err:
        for _ in range(5):
            client.chat.completions.create(model="oai", messages=MSG, max_tokens=20)
    h = err.value.response.headers
    assert err.value.code == "rate_limit_exceeded" and err.value.type == "tokens"
    assert 1 <= int(h["retry-after"]) <= 60
    assert all(name in h for name in OAI_RATE)
    assert h["x-ratelimit-remaining-tokens"] == "0" or int(h["x-ratelimit-remaining-tokens"]) < 40
    assert ups.oai.traffic.requests == key_spend(_admin(gw), key["id"], 2)["requests"] - 1


def _tokens_left(headers: Any) -> int:
    return int(headers["x-ratelimit-remaining-tokens"])


def test_an_openai_stream_carries_the_headers_and_settles_budget_and_tpm_from_its_final_chunk(
        gw: RunningGateway, ups: Ups) -> None:
    key = setup_key(_admin(gw), "wire-stream-oai", rpm=100, tpm=100_000, budget_usd=10.0, budget_period="daily")
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0, timeout=10)
    left = []
    usage = None
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="oai", messages=MSG, max_tokens=50,
                                                               stream=True)
        assert all(h in raw.headers for h in OAI_RATE)
        left.append(_tokens_left(raw.headers))
        chunks = list(raw.parse())
        usage = next((c.usage for c in chunks if c.usage), None)
    assert usage is None  # the client did not ask for usage: the gateway asked the upstream for it itself
    assert (ups.oai.traffic.last.body.get("stream_options") or {}).get("include_usage") is True
    row = _ledger_rows(gw, key["id"], 2)[0]
    assert row["usage_source"] == "provider"
    total = row["prompt_tokens"] + row["completion_tokens"]
    assert left[0] - left[1] == total  # the first stream's real tokens are in the window, estimate settled
    cost = 2 * (row["prompt_tokens"] * IN + row["completion_tokens"] * OUT)
    assert _settled(gw, key["id"], cost) == cost


def test_an_anthropic_stream_carries_the_headers_and_settles_budget_and_tpm(
        gw: RunningGateway, ups: Ups) -> None:
    key = setup_key(_admin(gw), "wire-stream-ant", rpm=100, tpm=100_000, budget_usd=10.0, budget_period="daily")
    client = anthropic.Anthropic(base_url=gw.url, api_key=key["key"], max_retries=0, timeout=10)
    left = []
    for _ in range(2):
        with client.messages.with_streaming_response.create(model="claude", messages=MSG, max_tokens=50,
                                                            stream=True) as raw:
            assert all(h in raw.headers for h in ANT_RATE + OAI_RATE)
            left.append(int(raw.headers["anthropic-ratelimit-tokens-remaining"]))
            events = list(raw.parse())
        final = [e for e in events if e.type == "message_delta"][-1]
        start = next(e for e in events if e.type == "message_start")
    used_in, used_out = start.message.usage.input_tokens, final.usage.output_tokens
    assert left[0] - left[1] == used_in + used_out
    assert _settled(gw, key["id"], 2 * (used_in * IN + used_out * OUT)) == 2 * (used_in * IN + used_out * OUT)


def test_a_stream_cut_mid_way_is_charged_to_the_budget_and_the_tpm(
        gw: RunningGateway, ups: Ups) -> None:
    key = setup_key(_admin(gw), "wire-cut-oai", rpm=100, tpm=100_000, budget_usd=10.0, budget_period="daily")
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0, timeout=10)
    first = client.chat.completions.with_raw_response.create(model="oai", messages=MSG, max_tokens=50)
    first.parse()
    ups.oai.faults.push(Fault.cut(after=3))
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="oai", messages=MSG, max_tokens=50, stream=True):
            pass
    third = client.chat.completions.with_raw_response.create(model="oai", messages=MSG, max_tokens=50)
    third.parse()
    rows = _ledger_rows(gw, key["id"], 3)
    cut = next(r for r in rows if r["status"] != 200)
    assert cut["prompt_tokens"] > 0 and cut["completion_tokens"] > 0
    whole = next(r for r in rows if r["status"] == 200)
    assert _tokens_left(first.headers) - _tokens_left(third.headers) == (
        whole["prompt_tokens"] + whole["completion_tokens"] + cut["prompt_tokens"] + cut["completion_tokens"])
    cost = sum(r["cost_nano"] for r in rows)
    assert _settled(gw, key["id"], cost) == cost


def _ledger_rows(gw: RunningGateway, key_id: str, n: int) -> list[dict[str, Any]]:
    key_spend(_admin(gw), key_id, requests=n)
    db = gw.app.state["deps"].config.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM spend_ledger WHERE key_id = ? ORDER BY ts_start", (key_id,)).fetchall()
    return [dict(r) for r in rows]


def _settled(gw: RunningGateway, key_id: str, expect: int) -> int:
    """The key's budget spend once it is ``expect`` (or after 3 s): a stream is settled when it has ended on
    the gateway's side, a moment after the client read its last event."""
    deadline = time.monotonic() + 3
    while (got := settled(gw, key_id)) != expect and time.monotonic() < deadline:
        time.sleep(0.02)
    return got


def test_bad_input_takes_no_request_and_its_headers_say_so_as_documented(
        gw: RunningGateway, ups: Ups) -> None:
    """docs/tenancy.md: a malformed body carries no rate headers; a model that does not exist is counted at
    admission (its headers say so) and given back once answered; the next answer says what is really left."""
    key = setup_key(_admin(gw), "wire-bad-input", rpm=10, tpm=100_000)
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0, timeout=10)
    with pytest.raises(openai.BadRequestError) as malformed:
        client.chat.completions.create(model="oai", messages=MSG, max_tokens=20, temperature=9)
    assert not [h for h in malformed.value.response.headers if h.startswith("x-ratelimit-")]
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="no-such-model", messages=MSG, max_tokens=20)
    assert unknown.value.response.headers["x-ratelimit-remaining-requests"] == "9"  # as counted at admission
    ok = client.chat.completions.with_raw_response.create(model="oai", messages=MSG, max_tokens=20)
    assert ok.headers["x-ratelimit-remaining-requests"] == "9"  # this call only: both refusals took nothing
    assert ups.oai.traffic.requests == 1


def test_a_budget_answered_as_402_is_anthropics_billing_error_and_not_retried(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    config = gateway_config(tmp_path_factory.mktemp("budget-402") / "gw.db")
    config["tenancy"]["budget_status"] = 402
    with running_gateway(config) as gw402:
        key = setup_key(_admin(gw402), "wire-402", rpm=10, budget_usd=0.001, budget_period="daily")
        with pytest.raises(anthropic.APIStatusError) as err:
            _ant(gw402, key).messages.create(model="mock", messages=MSG, max_tokens=50)
        body: Any = err.value.body
        assert err.value.status_code == 402 and body["error"]["type"] == "billing_error"
        assert body["error"]["message"].startswith("Budget exceeded for key")
        h = err.value.response.headers
        assert "retry-after" not in h and h["anthropic-ratelimit-requests-remaining"] == "10"  # given back
        assert key_spend(_admin(gw402), key["id"])["errors"] == 1
