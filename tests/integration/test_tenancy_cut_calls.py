"""Upstream calls that end without an answer, as the ledger and the budget see them: a call the upstream took
(it answered 200, or the request was sent before the connection broke) is billed at least its prompt, counted
locally; a call the upstream refused with an error status is not billed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from aiohttp import web

from tests.fakes.faults import Fault
from tests.fakes.openai_faults import server_error
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
from tests.support.servers import RunningServer, start_aiohttp_app


async def _hang_up(request: web.Request) -> web.StreamResponse:
    """Read the whole request, then close the connection without a status."""
    await request.read()
    assert request.transport is not None
    request.transport.close()
    return web.Response()


@pytest.fixture(scope="module")
def ups() -> Iterator[tuple[FakeOpenAI, RunningServer]]:
    oai = FakeOpenAI("sk-oai").start()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _hang_up)
    broken = start_aiohttp_app(app, "hang-up")
    yield oai, broken
    oai.stop()
    broken.stop()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cut-calls") / "gw.db"


@pytest.fixture(scope="module")
def gw(db: Path, ups: tuple[FakeOpenAI, RunningServer]) -> Iterator[RunningGateway]:
    oai, broken = ups
    model = {"provider": "openai", "model": "gpt-4o-mini", "api_key": "sk-oai", "prices": PRICES}
    models = [{"name": "oai", "api_base": oai.base_url, **model},
              {"name": "oai-again", "api_base": oai.base_url, **model},
              {"name": "broken", "api_base": broken.url + "/v1", **model}]
    with cut_calls_gateway(db, models, {"*": {"num_retries": 0}, "oai-again": {"num_retries": 1}}) as running:
        yield running


@pytest.fixture
def oai(ups: tuple[FakeOpenAI, RunningServer]) -> Iterator[FakeOpenAI]:
    yield ups[0]
    ups[0].faults.clear()


def test_a_stream_that_dies_after_its_200_before_any_chunk_bills_its_prompt(
        gw: RunningGateway, db: Path, oai: FakeOpenAI) -> None:
    admin, key, client = new_key(gw, "cut-before-first")
    oai.faults.push(Fault.cut(after=0))  # 200 with SSE headers, then the connection closes
    with pytest.raises(openai.APIStatusError) as err:
        stream_text(client, "oai")
    assert err.value.status_code == 502
    row = ledger_row(db, admin, key["id"])
    prompt = prompt_tokens()
    assert (row["prompt_tokens"], row["completion_tokens"], row["usage_source"]) == (prompt, 0, "local")
    assert row["cost_nano"] == prompt * IN and row["status"] == 502
    assert row["deployment_id"].startswith("oai")  # the deployment that took the call
    assert settled(gw, key["id"]) == prompt * IN


def test_a_stream_cut_midway_bills_its_prompt_and_what_it_sent(gw: RunningGateway, db: Path, oai: FakeOpenAI) -> None:
    admin, key, client = new_key(gw, "cut-midway")
    oai.faults.push(Fault(cut_after=3, chunk_delay=0.02))  # chunks arrive one by one before the cut
    with pytest.raises(openai.APIError):
        stream_text(client, "oai")
    row = ledger_row(db, admin, key["id"])
    assert row["prompt_tokens"] == prompt_tokens() and row["completion_tokens"] > 0
    assert row["usage_source"] == "local"
    assert row["cost_nano"] == row["prompt_tokens"] * IN + row["completion_tokens"] * OUT
    assert settled(gw, key["id"]) == row["cost_nano"]


def test_a_plain_call_whose_connection_closes_before_any_answer_bills_nothing(
        gw: RunningGateway, db: Path) -> None:
    """The request was sent and read, then the connection closed with no status: from the gateway's side that
    is the same as an upstream or proxy hanging up without reading it (an idle keep-alive connection closed as
    it is reused), which the router retries; billing it would bill a call that may never have run."""
    admin, key, client = new_key(gw, "hang-up")
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="broken", messages=MESSAGES, max_tokens=50)
    assert err.value.status_code == 502
    row = ledger_row(db, admin, key["id"])
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost_nano"]) == (0, 0, 0)
    assert settled(gw, key["id"]) == 0


def test_a_cut_attempt_retried_to_an_answer_bills_both(gw: RunningGateway, db: Path, oai: FakeOpenAI) -> None:
    admin, key, client = new_key(gw, "cut-then-retried")
    oai.faults.push(Fault.cut(after=0))  # the first attempt dies after its 200; the retry answers
    assert stream_text(client, "oai-again")
    row = ledger_row(db, admin, key["id"])
    cut = prompt_tokens()
    answered = row["prompt_tokens"] - cut  # the answer's own usage, as the upstream reported it
    assert answered > 0 and row["completion_tokens"] > 0 and row["usage_source"] == "local"
    assert row["cost_nano"] == (cut + answered) * IN + row["completion_tokens"] * OUT
    assert settled(gw, key["id"]) == row["cost_nano"]


@pytest.mark.parametrize("stream", [True, False])
def test_an_upstream_error_status_is_not_billed(gw: RunningGateway, db: Path, oai: FakeOpenAI, stream: bool) -> None:
    admin, key, client = new_key(gw, f"refused-{stream}")
    oai.faults.push(server_error(500))
    with pytest.raises(openai.APIStatusError):
        if stream:
            stream_text(client, "oai")
        else:
            client.chat.completions.create(model="oai", messages=MESSAGES, max_tokens=50)
    row = ledger_row(db, admin, key["id"])
    assert (row["cost_nano"], row["prompt_tokens"], row["usage_source"]) == (0, 0, "none")
    assert settled(gw, key["id"]) == 0


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_gone_while_the_upstream_works_is_billed_the_prompt(
        gw: RunningGateway, db: Path, oai: FakeOpenAI, stream: bool) -> None:
    admin, key, _ = new_key(gw, f"gone-{stream}")
    oai.faults.push(Fault.slow(headers=3.0))  # the upstream has the request and takes its time
    seen = oai.traffic.requests
    send_and_leave(gw, key, "oai", stream, until=lambda: oai.traffic.requests > seen)  # leave before any answer
    row = ledger_row(db, admin, key["id"])
    prompt = prompt_tokens()
    assert (row["status"], row["prompt_tokens"], row["completion_tokens"]) == (499, prompt, 0)
    assert (row["usage_source"], row["cost_nano"]) == ("local", prompt * IN)
    assert settled(gw, key["id"]) == prompt * IN


@pytest.mark.parametrize("stream", [True, False])
def test_a_200_whose_body_is_not_json_bills_its_prompt(gw: RunningGateway, db: Path, oai: FakeOpenAI,
                                                       stream: bool) -> None:
    """docs/tenancy.md: "answered 200 with a body that is neither an answer nor an error (not JSON, ...), plain or
    stream request: the prompt, counted locally" (found by a money soak: the stream request billed nothing)."""
    admin, key, client = new_key(gw, f"non-json-{stream}")
    oai.faults.push(Fault.non_json_body())  # 200; a stream gets a `data: <html>...` event, then [DONE]
    with pytest.raises(openai.APIError):
        if stream:
            stream_text(client, "oai")
        else:
            client.chat.completions.create(model="oai", messages=MESSAGES, max_tokens=50)
    row = ledger_row(db, admin, key["id"])
    prompt = prompt_tokens()
    assert (row["status"], row["prompt_tokens"], row["completion_tokens"]) == (502, prompt, 0)
    assert (row["usage_source"], row["cost_nano"]) == ("local", prompt * IN)
    assert settled(gw, key["id"]) == prompt * IN
