"""A request one deployment of a model cannot take (its adapter refuses it up front, before any upstream call)
goes to a sibling deployment, then to the fallbacks, that can: an Anthropic client's PDF by URL on an
OpenAI-style deployment beside an Anthropic one, an OpenAI client's file_id on an Anthropic deployment beside
an OpenAI one. The refusal calls no upstream, counts nothing against the refusing deployment's breaker and is
not retried there; only when no deployment can take the request does the client get the 400, in its wire format.
Seen through the official SDKs; upstreams are the fakes."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.integration.conftest import Upstreams
from tests.integration.routing_support import MASTER, by_model, config
from tests.support.gateway import RunningGateway, running_gateway

CHEAP = {"input_per_mtok": 0.1, "output_per_mtok": 0.1}  # with lowest_cost: this deployment is tried first
DEAR = {"input_per_mtok": 10.0, "output_per_mtok": 10.0}
FIRST = {"strategy": "lowest_cost", "num_retries": 2}
BREAKER = {"failures": 1, "cooldown_s": 60}  # one failure would open it
URL_PDF = {"type": "document", "source": {"type": "url", "url": "https://example.com/report.pdf"}}
FILE_ID = {"type": "file", "file": {"file_id": "file-abc"}}
UNTOUCHED = {"breaker": "closed", "window": {"seconds": 60.0, "calls": 0, "failures": 0}, "last_error": None}


def openai_style(ups: Upstreams, name: str = "m", prices: dict[str, float] = CHEAP) -> dict[str, Any]:
    return {"name": name, "provider": "openai", "model": "gpt-4o-mini", "api_base": ups.openai.base_url,
            "api_key": "sk-oai", "prices": prices}


def azure(ups: Upstreams, name: str = "m") -> dict[str, Any]:
    return {"name": name, "provider": "azure", "model": "gpt-4o-mini", "deployment": "chat",
            "api_base": ups.azure.url, "api_key": "az-key", "api_version": "2024-10-21", "prices": DEAR}


def claude(ups: Upstreams, name: str = "m", prices: dict[str, float] = DEAR) -> dict[str, Any]:
    return {"name": name, "provider": "anthropic", "model": "claude-test-1", "api_base": ups.anthropic_server.url,
            "api_key": ANTHROPIC_KEY, "prices": prices}


def untouched(gw: RunningGateway, model: str, provider: str) -> dict[str, Any]:
    row = by_model(gw, model, provider)
    return {k: row[k] for k in UNTOUCHED} | {"window": {**row["window"], "seconds": 60.0}}


def ask_anthropic(gw: RunningGateway, block: dict[str, Any], stream: bool) -> str:
    sdk = anthropic.Anthropic(base_url=gw.url, api_key=MASTER, max_retries=0, timeout=10)
    messages = [{"role": "user", "content": [block, {"type": "text", "text": "Summarise it."}]}]
    if stream:
        with sdk.messages.stream(model="m", max_tokens=20, messages=messages) as events:  # type: ignore[arg-type]
            message = events.get_final_message()
    else:
        message = sdk.messages.create(model="m", max_tokens=20, messages=messages)  # type: ignore[arg-type]
    return "".join(b.text for b in message.content if b.type == "text")


def ask_openai(gw: RunningGateway, part: dict[str, Any], stream: bool) -> str:
    sdk = openai.OpenAI(base_url=gw.v1, api_key=MASTER, max_retries=0, timeout=10)
    messages = [{"role": "user", "content": [{"type": "text", "text": "Summarise it."}, part]}]
    if stream:
        chunks = sdk.chat.completions.create(model="m", messages=messages, stream=True)  # type: ignore[arg-type]
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    answer = sdk.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    return answer.choices[0].message.content or ""


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_url_pdf_goes_to_the_anthropic_sibling_when_the_openai_one_is_picked_first(
        ups: Upstreams, stream: bool) -> None:
    cfg = config([openai_style(ups), claude(ups)], routing={"m": FIRST}, circuit_breaker=BREAKER)
    with running_gateway(cfg) as gw:
        for _ in range(2):
            assert ask_anthropic(gw, URL_PDF, stream)
        assert untouched(gw, "m", "openai") == UNTOUCHED
    assert ups.openai.traffic.requests == 0
    assert ups.anthropic.traffic.requests == 2  # once each: not a retry after a failure
    assert ups.anthropic.traffic.last.body["messages"][0]["content"][0] == URL_PDF


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_openai_file_id_goes_to_the_openai_sibling_when_the_anthropic_one_is_picked_first(
        ups: Upstreams, stream: bool) -> None:
    cfg = config([claude(ups, prices=CHEAP), openai_style(ups, prices=DEAR)], routing={"m": FIRST},
                 circuit_breaker=BREAKER)
    with running_gateway(cfg) as gw:
        assert ask_openai(gw, FILE_ID, stream)
        assert untouched(gw, "m", "anthropic") == UNTOUCHED
    assert (ups.anthropic.traffic.requests, ups.openai.traffic.requests) == (0, 1)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_fallback_model_that_can_take_it_serves_it(ups: Upstreams, stream: bool) -> None:
    cfg = config([openai_style(ups), azure(ups), claude(ups, name="backup")],
                 routing={"m": {"fallbacks": ["backup"], "num_retries": 0}}, circuit_breaker=BREAKER)
    with running_gateway(cfg) as gw:
        assert ask_anthropic(gw, URL_PDF, stream)
        assert untouched(gw, "m", "openai") == untouched(gw, "m", "azure") == UNTOUCHED
    assert (ups.openai.traffic.requests, ups.azure.traffic.requests, ups.anthropic.traffic.requests) == (0, 0, 1)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_with_only_openai_style_deployments_the_client_gets_anthropics_400(ups: Upstreams, stream: bool) -> None:
    cfg = config([openai_style(ups), azure(ups), openai_style(ups, name="backup")],
                 routing={"m": {"fallbacks": ["backup"], "num_retries": 2}}, circuit_breaker=BREAKER)
    with running_gateway(cfg) as gw:
        with pytest.raises(anthropic.BadRequestError) as caught:
            ask_anthropic(gw, URL_PDF, stream)
        assert untouched(gw, "m", "openai") == untouched(gw, "m", "azure") == UNTOUCHED
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "invalid_request_error"
    assert "messages.0.content.0" in body["error"]["message"] and "Anthropic" in body["error"]["message"]
    assert not (ups.openai.traffic.log or ups.azure.traffic.log)
