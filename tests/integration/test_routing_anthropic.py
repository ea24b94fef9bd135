"""An Anthropic-API client falls back across providers: from an Anthropic model to an OpenAI one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
import requests

from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_upstream import AnthropicUpstream, anthropic_error, overloaded_event
from tests.fakes.faults import Fault
from tests.integration.routing_support import MASTER, TimedOpenAI, config, upstream
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.servers import RunningServer, start_aiohttp_app

ASK = [{"role": "user", "content": "name a colour"}]


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[AnthropicUpstream, RunningServer, TimedOpenAI]]:
    ant = AnthropicUpstream()
    server = start_aiohttp_app(ant.app(), "fake-anthropic")
    oai = TimedOpenAI().start()
    yield ant, server, oai
    server.stop()
    oai.stop()


@pytest.fixture(scope="module")
def gw(fakes: tuple[AnthropicUpstream, RunningServer, TimedOpenAI]) -> Iterator[RunningGateway]:
    _, server, oai = fakes
    claude = {"name": "claude", "provider": "anthropic", "model": "claude-test-1", "api_base": server.url,
              "api_key": ANTHROPIC_KEY}
    priced = {**claude, "name": "claude-priced", "prices": {"input_per_mtok": 0, "output_per_mtok": 0,
                                                              "per_web_search": 0.01}}
    cfg = config([claude, priced, upstream(oai, "gpt")],
                 routing={"claude": {"fallbacks": ["gpt"], "num_retries": 0}},
                 circuit_breaker={"enabled": False})
    with running_gateway(cfg) as g:
        yield g


@pytest.fixture
def clean(fakes: tuple[AnthropicUpstream, RunningServer, TimedOpenAI]) -> Iterator[None]:
    ant, _, oai = fakes
    ant.reset()
    oai.reset()
    yield
    ant.reset()
    oai.reset()


@pytest.fixture
def client(gw: RunningGateway, clean: None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=MASTER, max_retries=0, timeout=10)


def test_overloaded_anthropic_falls_back_to_openai(client: anthropic.Anthropic,
                                                   fakes: tuple[AnthropicUpstream, RunningServer, TimedOpenAI]) -> None:
    ant, _, oai = fakes
    ant.faults.push(anthropic_error(529, "overloaded_error", "Overloaded"))
    raw = client.messages.with_raw_response.create(model="claude", max_tokens=50, messages=ASK)  # type: ignore[arg-type]
    msg = raw.parse()
    assert msg.type == "message" and msg.content[0].type == "text" and msg.content[0].text
    assert msg.model == "gpt"  # the model field says who finally served
    assert raw.headers["x-aigw-served-model"] == "gpt" and raw.headers["x-aigw-provider"] == "openai"
    assert raw.headers["x-aigw-fallbacks"] == "gpt"
    assert (ant.traffic.requests, oai.traffic.requests) == (1, 1)


def test_a_healthy_anthropic_model_serves_itself(client: anthropic.Anthropic,
                                                 fakes: tuple[AnthropicUpstream, RunningServer, TimedOpenAI]) -> None:
    _, _, oai = fakes
    raw = client.messages.with_raw_response.create(model="claude", max_tokens=50, messages=ASK)  # type: ignore[arg-type]
    assert raw.headers["x-aigw-served-model"] == "claude" and "x-aigw-fallbacks" not in raw.headers
    assert oai.traffic.requests == 0


def test_anthropic_stream_falls_back_before_its_first_byte(
    client: anthropic.Anthropic, fakes: tuple[AnthropicUpstream, RunningServer, TimedOpenAI]
) -> None:
    ant, _, oai = fakes
    ant.faults.push(Fault.cut(after=0))
    with client.messages.stream(model="claude", max_tokens=50, messages=ASK) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.stop_reason == "end_turn" and final.model == "gpt"
    assert (ant.traffic.requests, oai.traffic.requests) == (1, 1)


def test_anthropic_overloaded_right_after_message_start_still_falls_back(
    client: anthropic.Anthropic, fakes: tuple[AnthropicUpstream, RunningServer, TimedOpenAI]
) -> None:
    """Anthropic sends message_start before the model's first token, and its overloaded_error may follow it:
    nothing the client can use was sent yet, so the stream falls back instead of ending in an error."""
    ant, _, oai = fakes
    ant.faults.push(Fault(stream_error=overloaded_event(), cut_after=1))
    with client.messages.stream(model="claude", max_tokens=50, messages=ASK) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.stop_reason == "end_turn" and final.model == "gpt"
    assert (ant.traffic.requests, oai.traffic.requests) == (1, 1)


def test_anthropic_stream_cut_after_its_first_byte_is_an_error_event(
    client: anthropic.Anthropic, fakes: tuple[AnthropicUpstream, RunningServer, TimedOpenAI]
) -> None:
    ant, _, oai = fakes
    ant.faults.push(Fault(cut_after=4, chunk_delay=0.02))
    with pytest.raises(anthropic.APIError), client.messages.stream(
        model="claude", max_tokens=50, messages=ASK  # type: ignore[arg-type]
    ) as stream:
        for _ in stream:
            pass
    assert oai.traffic.requests == 0  # no fallback once bytes reached the client


BETAS = "files-api-2025-04-14,interleaved-thinking-2025-05-14"


def test_anthropic_beta_reaches_the_anthropic_upstream_and_not_a_fallback(
    client: anthropic.Anthropic, fakes: tuple[AnthropicUpstream, RunningServer, TimedOpenAI]
) -> None:
    ant, _, oai = fakes
    client.messages.create(model="claude", max_tokens=50, messages=ASK,  # type: ignore[arg-type]
                           extra_headers={"anthropic-beta": BETAS})
    assert ant.traffic.last.headers["anthropic-beta"] == BETAS
    with client.messages.stream(model="claude", max_tokens=50, messages=ASK,  # type: ignore[arg-type]
                                extra_headers={"anthropic-beta": BETAS}) as stream:
        stream.get_final_message()
    assert ant.traffic.last.headers["anthropic-beta"] == BETAS
    ant.faults.push(anthropic_error(529, "overloaded_error", "Overloaded"))
    raw = client.messages.with_raw_response.create(model="claude", max_tokens=50, messages=ASK,  # type: ignore[arg-type]
                                                   extra_headers={"anthropic-beta": BETAS})
    assert raw.headers["x-aigw-provider"] == "openai"
    sent = oai.traffic.last
    assert not {k.lower() for k in sent.headers} & {"anthropic-beta"}
    assert "_anthropic" not in sent.body and "anthropic_beta" not in str(sent.body)


def test_anthropic_billing_error_is_not_retried_and_falls_back(
        fakes: tuple[AnthropicUpstream, RunningServer, TimedOpenAI], clean: None) -> None:
    """No credit on the Anthropic account: retrying that deployment cannot help, the fallback answers."""
    ant, server, oai = fakes
    claude = {"name": "claude", "provider": "anthropic", "model": "claude-test-1", "api_base": server.url,
              "api_key": ANTHROPIC_KEY}
    cfg = config([claude, upstream(oai, "gpt")], routing={"claude": {"fallbacks": ["gpt"], "num_retries": 3}},
                 circuit_breaker={"enabled": False})
    ant.faults.always(anthropic_error(402, "billing_error", "Your credit balance is too low"))
    with running_gateway(cfg) as g:
        client = anthropic.Anthropic(base_url=g.url, api_key=MASTER, max_retries=0, timeout=10)
        raw = client.messages.with_raw_response.create(model="claude", max_tokens=50, messages=ASK)  # type: ignore[arg-type]
    assert raw.parse().model == "gpt" and raw.headers["x-aigw-fallbacks"] == "gpt"
    assert (ant.traffic.requests, oai.traffic.requests) == (1, 1)


def test_anthropic_stream_reports_the_upstreams_input_usage_in_message_start(
    client: anthropic.Anthropic, gw: RunningGateway
) -> None:
    """Anthropic's message_start carries the input counts; clients that read them there (LangChain, older
    SDKs) must not see zeros. An OpenAI client of the same stream gets no trace of them."""
    with client.messages.with_streaming_response.create(
            model="claude", max_tokens=50, stream=True, messages=ASK) as r:  # type: ignore[arg-type]
        events = list(r.parse())
    start, delta = events[0], next(e for e in events if e.type == "message_delta")
    assert start.type == "message_start"
    assert start.message.usage.input_tokens > 0
    assert start.message.usage.input_tokens == delta.usage.input_tokens
    oai = openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0, timeout=10)
    chunks = list(oai.chat.completions.create(model="claude", max_tokens=50, stream=True, messages=ASK))  # type: ignore[arg-type]
    assert all("_anthropic" not in (c.model_extra or {}) for c in chunks)


@pytest.mark.parametrize("stream", [False, True])
def test_web_searches_the_upstream_ran_are_billed_per_search(client: anthropic.Anthropic, gw: RunningGateway,
                                                             stream: bool) -> None:
    """Anthropic bills each server-side web search beside the tokens (usage.server_tool_use): the ledger
    and the request log charge it, plain or streamed (tokens are free on this deployment: cost = searches)."""
    search = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]
    if stream:
        with client.messages.with_streaming_response.create(
                model="claude-priced", max_tokens=50, messages=ASK, tools=search, stream=True) as r:  # type: ignore[arg-type]
            request_id = r.headers["x-request-id"]
            events = list(r.parse())
        usage = next(e for e in events if e.type == "message_delta").usage
    else:
        raw = client.messages.with_raw_response.create(
            model="claude-priced", max_tokens=50, messages=ASK, tools=search)  # type: ignore[arg-type]
        request_id, usage = raw.headers["x-request-id"], raw.parse().usage
    assert usage.server_tool_use is not None and usage.server_tool_use.web_search_requests == 1
    assert _logged(gw, request_id)["cost_usd"] == pytest.approx(0.01)


def _logged(gw: RunningGateway, request_id: str) -> dict[str, Any]:
    """The request log's record of one request (it is written in batches: a bounded wait)."""
    deadline = time.monotonic() + 5
    while True:
        r = requests.get(f"{gw.url}/admin/requests/{request_id}", headers={"Authorization": f"Bearer {MASTER}"},
                         timeout=5)
        if r.status_code == 200 or time.monotonic() > deadline:
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]
        time.sleep(0.03)
