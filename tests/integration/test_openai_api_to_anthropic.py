"""OpenAI clients in front of an Anthropic deployment: the OpenAI knobs Anthropic spells differently.

``reasoning_effort`` turns into extended thinking (and the thinking comes back as ``reasoning_content``),
``tool_choice`` without ``tools`` is OpenAI's own 400; all with the official SDK against the fake upstream,
which enforces Anthropic's thinking rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.integration.conftest import Upstreams
from tests.support.gateway import RunningGateway, running_gateway

WEATHER: Any = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def gw(upstreams: Upstreams) -> Iterator[RunningGateway]:
    claude = {"name": "claude", "provider": "anthropic", "model": "claude-sonnet-4-5",
              "api_base": upstreams.anthropic_server.url, "api_key": ANTHROPIC_KEY}
    cfg: dict[str, Any] = {
        "models": [claude, {**claude, "name": "claude-old", "model": "claude-3-5-haiku-20241022"}],
        "routing": {"*": {"num_retries": 0}}, "circuit_breaker": {"enabled": False},
    }
    with running_gateway(cfg) as g:
        yield g


@pytest.fixture
def client(gw: RunningGateway, ups: Upstreams) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key="k", max_retries=0)


def test_tool_choice_without_tools_is_openais_400(client: openai.OpenAI, ups: Upstreams) -> None:
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}],
                                           tool_choice="required", stream=stream)  # type: ignore[call-overload]
        body = err.value.body
        assert isinstance(body, dict) and body["param"] == "tool_choice" and body["type"] == "invalid_request_error"
        assert "'tool_choice' is only allowed when 'tools' are specified" in body["message"]
    assert ups.anthropic.traffic.requests == 0


def test_reasoning_effort_thinks_and_returns_the_thinking(client: openai.OpenAI, ups: Upstreams) -> None:
    ask: Any = [{"role": "user", "content": "Why is the sky blue?"}]
    resp = client.chat.completions.create(model="claude", messages=ask, reasoning_effort="medium")
    sent = ups.anthropic.traffic.last.body
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert sent["max_tokens"] == 4096 + 4096  # no client max: the answer keeps the usual room beside the budget
    message = resp.choices[0].message
    assert message.content == "echo: Why is the sky blue?"
    assert (message.model_extra or {})["reasoning_content"].startswith("The user said: Why is the sky blue?")
    assert "_anthropic" not in (message.model_extra or {})  # signatures stay inside the gateway

    chunks = list(client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Why?"}],
                                                 reasoning_effort="high", max_completion_tokens=3000, stream=True))
    sent = ups.anthropic.traffic.last.body
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2999} and sent["max_tokens"] == 3000
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    thought = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    text = "".join(d.content or "" for d in deltas)
    assert thought.startswith("The user said: Why?") and text == "echo: Why?"


def test_reasoning_effort_that_cannot_think_sends_no_thinking(client: openai.OpenAI, ups: Upstreams) -> None:
    ask = [{"role": "user", "content": "hi"}]
    client.chat.completions.create(model="claude", messages=ask, reasoning_effort="minimal")  # type: ignore[arg-type]
    assert "thinking" not in ups.anthropic.traffic.last.body
    client.chat.completions.create(model="claude", messages=ask, reasoning_effort="low",  # type: ignore[arg-type]
                                   max_completion_tokens=500)  # under Anthropic's 1024-token floor
    assert "thinking" not in ups.anthropic.traffic.last.body and ups.anthropic.traffic.last.body["max_tokens"] == 500


def test_reasoning_effort_in_a_tool_loop_keeps_working(client: openai.OpenAI, ups: Upstreams) -> None:
    """An OpenAI client cannot send the signed thinking block back, which Anthropic demands after a tool call:
    that turn goes without thinking instead of failing."""
    msgs: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    first = client.chat.completions.create(model="claude", messages=msgs, tools=[WEATHER], reasoning_effort="low")
    assert first.choices[0].finish_reason == "tool_calls" and ups.anthropic.traffic.last.body["thinking"]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    msgs += [first.choices[0].message.model_dump(exclude_none=True, exclude={"reasoning_content"}),
             {"role": "tool", "tool_call_id": call.id, "content": "4 C, rain"}]
    second = client.chat.completions.create(model="claude", messages=msgs, tools=[WEATHER], reasoning_effort="low")
    assert second.choices[0].finish_reason == "stop" and "thinking" not in ups.anthropic.traffic.last.body


def test_reasoning_effort_refusals_are_openais(client: openai.OpenAI, ups: Upstreams) -> None:
    ask = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as old:
        client.chat.completions.create(model="claude-old", messages=ask, reasoning_effort="high")  # type: ignore[arg-type]
    assert isinstance(old.value.body, dict) and old.value.body["param"] == "reasoning_effort"
    with pytest.raises(openai.BadRequestError) as warm:
        client.chat.completions.create(model="claude", messages=ask, reasoning_effort="high",  # type: ignore[arg-type]
                                       temperature=0.2)
    assert isinstance(warm.value.body, dict) and warm.value.body["param"] == "temperature"
    assert "Only the default (1) value is supported" in warm.value.body["message"]
    assert ups.anthropic.traffic.requests == 0


@pytest.mark.parametrize("effort", [["high"], {"effort": "high"}, 2, True])
def test_reasoning_effort_of_another_type_is_openais_400(client: openai.OpenAI, ups: Upstreams, effort: Any) -> None:
    # a list or an object was a 500 (unhashable in the adapter's effort look-up); a number or a bool only
    # failed once the call reached the Anthropic adapter
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}],
                                           reasoning_effort=effort, stream=stream)
        body = err.value.body
        assert isinstance(body, dict) and body["type"] == "invalid_request_error"
        assert (body["param"], body["code"]) == ("reasoning_effort", "invalid_type")
    assert ups.anthropic.traffic.requests == 0
