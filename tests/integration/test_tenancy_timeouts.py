"""Timed-out upstream calls, as the ledger and the budget see them: a call the upstream took (its request was
sent) and that a timeout ended (the deployment's total or first-token limit, the request's own deadline) is
billed its prompt, counted locally, as the upstream goes on and bills it; a call that never connected (a connect
timeout), or that the client left while it was still connecting, is billed nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI
from tests.integration.cut_calls_support import (
    IN,
    MESSAGES,
    OUT,
    PRICES,
    cut_calls_gateway,
    ledger_row,
    new_key,
    prompt_tokens,
    send_and_leave,
    settled,
    stream_text,
)
from tests.support.gateway import RunningGateway
from tests.support.servers import unaccepting_port


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    oai = FakeOpenAI("sk-oai").start()
    yield oai
    oai.stop()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("timeouts") / "gw.db"


@pytest.fixture(scope="module")
def gw(db: Path, fake: FakeOpenAI) -> Iterator[RunningGateway]:
    model = {"provider": "openai", "model": "gpt-4o-mini", "api_key": "sk-oai", "prices": PRICES}
    with unaccepting_port() as port:
        black_hole = f"http://127.0.0.1:{port}/v1"
        with cut_calls_gateway(db, [
            {"name": "oai", "api_base": fake.base_url, **model},
            {"name": "slow", "api_base": fake.base_url, "timeout_s": 0.4, **model},
            {"name": "slow-first", "api_base": fake.base_url, "first_token_timeout_s": 0.3, **model},
            {"name": "no-connect", "api_base": black_hole, "connect_timeout_s": 0.2, **model},
            {"name": "connecting", "api_base": black_hole, "connect_timeout_s": 3.0, **model},
        ]) as running:
            yield running


@pytest.fixture
def oai(fake: FakeOpenAI) -> Iterator[FakeOpenAI]:
    yield fake
    fake.faults.clear()


def _assert_prompt_billed(gw: RunningGateway, db: Path, admin: object, key_id: str, status: int) -> None:
    row = ledger_row(db, admin, key_id)  # type: ignore[arg-type]
    prompt = prompt_tokens()
    assert (row["status"], row["prompt_tokens"], row["completion_tokens"]) == (status, prompt, 0)
    assert (row["usage_source"], row["cost_nano"]) == ("local", prompt * IN)
    assert row["deployment_id"]  # the deployment that took the call
    assert settled(gw, key_id) == prompt * IN


def _assert_nothing_billed(gw: RunningGateway, db: Path, admin: object, key_id: str, status: int) -> None:
    row = ledger_row(db, admin, key_id)  # type: ignore[arg-type]
    assert (row["status"], row["cost_nano"], row["prompt_tokens"], row["usage_source"]) == (status, 0, 0, "none")
    assert settled(gw, key_id) == 0


def test_a_plain_call_the_upstream_holds_past_the_total_timeout_bills_its_prompt(
        gw: RunningGateway, db: Path, oai: FakeOpenAI) -> None:
    admin, key, client = new_key(gw, "total-timeout")
    oai.faults.push(Fault.stall_forever())  # takes the request, never answers
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="slow", messages=MESSAGES, max_tokens=50)
    assert err.value.status_code == 504
    _assert_prompt_billed(gw, db, admin, key["id"], 504)


def test_a_stream_silent_after_its_200_past_the_first_token_timeout_bills_its_prompt(
        gw: RunningGateway, db: Path, oai: FakeOpenAI) -> None:
    admin, key, client = new_key(gw, "first-token-timeout")
    oai.faults.push(Fault.slow(first_chunk=3.0))  # 200 with SSE headers, then silence
    with pytest.raises(openai.APIStatusError) as err:
        stream_text(client, "slow-first")
    assert err.value.status_code == 504
    _assert_prompt_billed(gw, db, admin, key["id"], 504)


@pytest.mark.parametrize("stream", [False, True])
def test_the_request_deadline_firing_mid_call_bills_the_prompt(
        gw: RunningGateway, db: Path, oai: FakeOpenAI, stream: bool) -> None:
    admin, key, client = new_key(gw, f"deadline-{stream}")
    oai.faults.push(Fault.slow(first_chunk=3.0) if stream else Fault.stall_forever())
    deadline = {"extra_headers": {"x-aigw-timeout": "0.4"}}
    with pytest.raises(openai.APIStatusError) as err:
        if stream:
            stream_text(client, "oai", **deadline)
        else:
            client.chat.completions.create(model="oai", messages=MESSAGES, max_tokens=50, **deadline)
    assert err.value.status_code == 504
    _assert_prompt_billed(gw, db, admin, key["id"], 504)


@pytest.mark.parametrize("stream", [False, True])
def test_a_connect_timeout_bills_nothing(gw: RunningGateway, db: Path, stream: bool) -> None:
    admin, key, client = new_key(gw, f"connect-timeout-{stream}")
    with pytest.raises(openai.APIStatusError) as err:
        if stream:
            stream_text(client, "no-connect")
        else:
            client.chat.completions.create(model="no-connect", messages=MESSAGES, max_tokens=50)
    assert err.value.status_code == 504
    _assert_nothing_billed(gw, db, admin, key["id"], 504)


def test_a_client_gone_while_the_gateway_still_connects_bills_nothing(gw: RunningGateway, db: Path) -> None:
    admin, key, _ = new_key(gw, "gone-connecting")
    send_and_leave(gw, key, "connecting", stream=False)
    _assert_nothing_billed(gw, db, admin, key["id"], 499)


def test_a_stream_past_the_total_timeout_after_its_first_chunks_bills_its_prompt_and_what_it_sent(
        gw: RunningGateway, db: Path, oai: FakeOpenAI) -> None:
    admin, key, client = new_key(gw, "total-timeout-midway")
    oai.faults.push(Fault.slow(between=0.15))  # the first chunks come, the rest too slowly for timeout_s
    with pytest.raises(openai.APIError):
        stream_text(client, "slow")
    row = ledger_row(db, admin, key["id"])
    assert row["prompt_tokens"] == prompt_tokens() and row["completion_tokens"] > 0
    assert row["usage_source"] == "local"
    assert row["cost_nano"] == row["prompt_tokens"] * IN + row["completion_tokens"] * OUT
    assert settled(gw, key["id"]) == row["cost_nano"]
