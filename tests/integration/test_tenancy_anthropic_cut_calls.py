"""Anthropic upstream calls that end without an answer, as the ledger and the budget see them, end to end: the
gateway's Anthropic adapter against a fake speaking Anthropic's exact SSE order (message_start,
content_block_start, ping, content_block_delta...). A stream cut after its 200 (before any event, or mid-way), or
a call timed out after it was sent, bills at least the prompt, counted locally; an error status or an ``error``
event in place of the stream bills nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.fakes.anthropic_upstream import AnthropicUpstream, anthropic_error, overloaded_event
from tests.fakes.anthropic_wire import plan
from tests.fakes.faults import Fault
from tests.integration.cut_calls_support import (
    IN,
    MESSAGES,
    OUT,
    PRICES,
    cut_calls_gateway,
    ledger_row,
    new_key,
    prompt_tokens,
    settled,
    stream_text,
)
from tests.support.gateway import RunningGateway
from tests.support.servers import RunningServer, start_aiohttp_app

MODEL = "claude-test-1"


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[AnthropicUpstream, RunningServer]]:
    fake = AnthropicUpstream()
    server = start_aiohttp_app(fake.app(), "fake-anthropic")
    yield fake, server
    server.stop()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("anthropic-cut-calls") / "gw.db"


@pytest.fixture(scope="module")
def gw(db: Path, upstream: tuple[AnthropicUpstream, RunningServer]) -> Iterator[RunningGateway]:
    fake, server = upstream
    claude = {"provider": "anthropic", "model": MODEL, "api_base": server.url, "api_key": fake.api_key,
              "prices": PRICES}
    with cut_calls_gateway(db, [{"name": "claude", **claude},
                                {"name": "claude-slow", "timeout_s": 0.4, "first_token_timeout_s": 0.3, **claude}]
                           ) as running:
        yield running


@pytest.fixture
def ant(upstream: tuple[AnthropicUpstream, RunningServer]) -> Iterator[AnthropicUpstream]:
    yield upstream[0]
    upstream[0].reset()


def _plain(client: openai.OpenAI, model: str = "claude") -> None:
    client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=50)


def _assert_prompt_billed(gw: RunningGateway, db: Path, row: dict[str, object], key_id: str, status: int) -> None:
    prompt = prompt_tokens(MODEL)
    assert (row["status"], row["prompt_tokens"], row["completion_tokens"]) == (status, prompt, 0)
    assert (row["usage_source"], row["cost_nano"]) == ("local", prompt * IN)
    assert str(row["deployment_id"]).startswith("claude")
    assert settled(gw, key_id) == prompt * IN


def test_a_stream_cut_after_its_200_before_any_event_bills_its_prompt(
        gw: RunningGateway, db: Path, ant: AnthropicUpstream) -> None:
    admin, key, client = new_key(gw, "ant-cut-before-first")
    ant.faults.push(Fault.cut(after=0))  # 200 with SSE headers, then the connection closes
    with pytest.raises(openai.APIStatusError) as err:
        stream_text(client, "claude")
    assert err.value.status_code == 502
    _assert_prompt_billed(gw, db, ledger_row(db, admin, key["id"]), key["id"], 502)


def test_a_stream_cut_mid_way_bills_the_input_its_start_told_and_what_it_sent(
        gw: RunningGateway, db: Path, ant: AnthropicUpstream) -> None:
    admin, key, client = new_key(gw, "ant-cut-midway")
    # message_start, content_block_start, ping and two text deltas arrive one by one, then the cut
    ant.faults.push(Fault(cut_after=5, chunk_delay=0.02))
    with pytest.raises(openai.APIError):
        stream_text(client, "claude")
    row = ledger_row(db, admin, key["id"])
    told = plan(ant.traffic.last.body, set()).usage  # its message_start's input, which came before the cut
    assert row["prompt_tokens"] == told["input_tokens"] != prompt_tokens(MODEL)  # not the local count of it
    assert row["completion_tokens"] > 0 and row["usage_source"] == "local"  # the output is counted
    assert row["cost_nano"] == row["prompt_tokens"] * IN + row["completion_tokens"] * OUT
    assert settled(gw, key["id"]) == row["cost_nano"]


def test_a_plain_call_held_past_the_total_timeout_bills_its_prompt(
        gw: RunningGateway, db: Path, ant: AnthropicUpstream) -> None:
    admin, key, client = new_key(gw, "ant-total-timeout")
    ant.faults.push(Fault.stall_forever())
    with pytest.raises(openai.APIStatusError) as err:
        _plain(client, "claude-slow")
    assert err.value.status_code == 504
    _assert_prompt_billed(gw, db, ledger_row(db, admin, key["id"]), key["id"], 504)


def test_a_stream_silent_after_its_200_past_the_first_token_timeout_bills_its_prompt(
        gw: RunningGateway, db: Path, ant: AnthropicUpstream) -> None:
    admin, key, client = new_key(gw, "ant-first-token")
    ant.faults.push(Fault(delay_first_chunk=3.0))
    with pytest.raises(openai.APIStatusError) as err:
        stream_text(client, "claude-slow")
    assert err.value.status_code == 504
    _assert_prompt_billed(gw, db, ledger_row(db, admin, key["id"]), key["id"], 504)


@pytest.mark.parametrize("case", ["status-plain", "status-stream", "error-event"])
def test_an_error_the_upstream_answered_is_not_billed(
        gw: RunningGateway, db: Path, ant: AnthropicUpstream, case: str) -> None:
    admin, key, client = new_key(gw, f"ant-refused-{case}")
    if case == "error-event":  # 200, then `event: error` in place of the stream
        ant.faults.push(Fault(stream_error=overloaded_event(), cut_after=0))
    else:
        ant.faults.push(anthropic_error(529, "overloaded_error", "Overloaded"))
    with pytest.raises(openai.APIStatusError) as err:
        if case == "status-plain":
            _plain(client)
        else:
            stream_text(client, "claude")
    assert err.value.status_code == 503
    row = ledger_row(db, admin, key["id"])
    assert (row["cost_nano"], row["prompt_tokens"], row["usage_source"]) == (0, 0, "none")
    assert settled(gw, key["id"]) == 0
