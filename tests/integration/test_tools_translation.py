"""Tool calling and structured output through translation, with both official SDKs as real clients.

OpenAI SDK -> gateway -> Anthropic deployment (the fake Anthropic upstream, which streams and checks as the
real API does), and the anthropic SDK -> gateway -> OpenAI deployment (the fake OpenAI upstream); the anthropic
SDK against scripted OpenAI-compatible servers is in ``test_anthropic_tools_compat``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from pydantic import BaseModel, Field

from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.integration.conftest import Upstreams
from tests.support.gateway import RunningGateway, running_gateway

NOW: Any = {"type": "function", "function": {"name": "now", "description": "The time",
                                             "parameters": {"type": "object", "properties": {}}}}
TRIP: Any = {"type": "function", "function": {"name": "plan_trip", "parameters": {
    "type": "object", "required": ["dest"], "properties": {
        "dest": {"type": "object", "properties": {"city": {"type": "string"},
                                                  "tags": {"type": "array", "items": {"type": "string"}}}},
        "days": {"type": "integer"}}}}}


@pytest.fixture(scope="module")
def gw(upstreams: Upstreams) -> Iterator[RunningGateway]:
    claude = {"name": "claude", "provider": "anthropic", "model": "claude-sonnet-4-5",
              "api_base": upstreams.anthropic_server.url, "api_key": ANTHROPIC_KEY}
    oai = {"name": "oai", "provider": "openai", "model": "gpt-4o-mini", "api_base": upstreams.openai.base_url,
           "api_key": "sk-oai"}
    older = {**claude, "name": "claude-older", "model": "claude-3-5-haiku-20241022"}
    cfg: dict[str, Any] = {"models": [claude, older, oai], "routing": {"*": {"num_retries": 0}},
                           "circuit_breaker": {"enabled": False}}
    with running_gateway(cfg) as g:
        yield g


@pytest.fixture
def oc(gw: RunningGateway, ups: Upstreams) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key="k", max_retries=0)


@pytest.fixture
def ac(gw: RunningGateway, ups: Upstreams) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="k", max_retries=0)


def streamed_calls(oc: openai.OpenAI, tools: list[Any], text: str) -> dict[int, dict[str, str]]:
    """The tool calls of a streamed answer, accumulated by index as an OpenAI client does."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in oc.chat.completions.create(model="claude", messages=[{"role": "user", "content": text}],
                                            tools=tools, stream=True):
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            got = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            got["id"] += call.id or ""
            got["name"] += (call.function.name or "") if call.function else ""
            got["arguments"] += (call.function.arguments or "") if call.function else ""
    return calls


def test_a_streamed_call_without_arguments_has_an_empty_object(oc: openai.OpenAI, ups: Upstreams) -> None:
    """Anthropic streams a tool call without input as one empty input_json_delta: the OpenAI client got
    arguments "" (json.loads fails, the SDK's stream helper cannot parse it); it gets "{}" as when not streaming."""
    calls = streamed_calls(oc, [TRIP, NOW], "Plan a trip to Zürich 日本")
    assert [c["name"] for c in calls.values()] == ["plan_trip", "now"]
    assert json.loads(calls[0]["arguments"]) == {"dest": {"city": "Plan a trip to Zürich 日本",
                                                          "tags": ["Plan a trip to Zürich 日本"]}, "days": 6}
    assert calls[1]["arguments"] == "{}" and calls[1]["id"].startswith("toolu_")
    with oc.chat.completions.stream(model="claude", messages=[{"role": "user", "content": "time?"}],
                                    tools=[NOW]) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    assert choice.message.tool_calls[0].function.arguments == "{}"


@pytest.mark.parametrize("call_id", ["functions.get_weather:0", "call 1/2", "call_é"])
def test_tool_ids_from_another_provider_reach_anthropic(oc: openai.OpenAI, ups: Upstreams, call_id: str) -> None:
    """A conversation begun on another provider (or before a fallback) carries its tool call ids: Moonshot's
    ``functions.name:0`` and others Anthropic refuses (ids must match ``^[a-zA-Z0-9_-]+$``), which was
    Anthropic's 400. The id is sent with each such character as ``_``, the same for the call and its result."""
    weather: Any = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    msgs: Any = [{"role": "user", "content": "Weather in Oslo?"},
                 {"role": "assistant", "content": None, "tool_calls": [
                     {"id": call_id, "type": "function",
                      "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
                 {"role": "tool", "tool_call_id": call_id, "content": "4 C, rain"}]
    resp = oc.chat.completions.create(model="claude", messages=msgs, tools=[weather])
    assert resp.choices[0].finish_reason == "stop" and resp.choices[0].message.content == "tool results: 4 C, rain"
    sent = ups.anthropic.traffic.last.body["messages"]
    use_id = sent[1]["content"][0]["id"]
    assert sent[2]["content"][0]["tool_use_id"] == use_id and re.fullmatch(r"[a-zA-Z0-9_-]+", use_id)


class Address(BaseModel):
    city: str = Field(min_length=1)
    zip: str | None = None


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=150)
    addresses: list[Address]


def test_structured_output_with_constraints_reaches_anthropic(oc: openai.OpenAI, ups: Upstreams) -> None:
    """The SDK's parse() with a pydantic model holding bounds (``Field(ge=0)``, ``min_length``) sent
    ``minimum``, ``minLength``... which Anthropic refuses with a 400 ("For 'integer' type, property 'minimum'
    is not supported"); the schema is now reshaped as the anthropic SDK reshapes its own."""
    ask: Any = [{"role": "user", "content": "Ann, 30, Oslo"}]
    resp = oc.chat.completions.parse(model="claude", messages=ask, response_format=Person)
    parsed = resp.choices[0].message.parsed
    assert isinstance(parsed, Person) and parsed.addresses and parsed.addresses[0].city
    schema = ups.anthropic.traffic.last.body["output_config"]["format"]["schema"]
    age = schema["properties"]["age"]
    assert "minimum" not in age and age["description"] == "{maximum: 150, minimum: 0}"
    with oc.chat.completions.stream(model="claude", messages=ask, response_format=Person) as stream:
        for _ in stream:
            pass
        assert isinstance(stream.get_final_completion().choices[0].message.parsed, Person)


def test_strict_tools_with_constraints_reach_anthropic(oc: openai.OpenAI, ups: Upstreams) -> None:
    resp = oc.chat.completions.parse(model="claude", messages=[{"role": "user", "content": "Ann"}],
                                     tools=[openai.pydantic_function_tool(Person)], tool_choice="required")
    call = resp.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert isinstance(call.function.parsed_arguments, Person)
    assert ups.anthropic.traffic.last.body["tools"][0]["strict"] is True


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "plan_trip"}}])
def test_reasoning_effort_with_a_forced_tool_call(oc: openai.OpenAI, ups: Upstreams, choice: Any) -> None:
    """Anthropic refuses thinking when tool_choice forces a tool ("Thinking may not be enabled when tool_choice
    forces tool use"), which OpenAI's reasoning models take: that request goes without thinking, not a 400."""
    for stream in (False, True):
        resp = oc.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Rome"}],
                                          tools=[TRIP, NOW], tool_choice=choice, reasoning_effort="low",
                                          stream=stream)
        if stream:
            assert [c.choices[0].finish_reason for c in resp if c.choices][-1] == "tool_calls"  # type: ignore[union-attr]
        else:
            assert resp.choices[0].finish_reason == "tool_calls"  # type: ignore[union-attr]
        assert "thinking" not in ups.anthropic.traffic.last.body
    oc.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Rome"}], tools=[TRIP],
                               tool_choice="auto", reasoning_effort="low")
    assert ups.anthropic.traffic.last.body["thinking"]["type"] == "enabled"  # auto: thinking stays


LEGACY_FN: Any = {"name": "get_weather", "description": "Weather for a city",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_legacy_functions_are_called_on_anthropic(oc: openai.OpenAI, ups: Upstreams) -> None:
    """The legacy ``functions``/``function_call`` API (older LangChain, many scripts) was dropped on the way to
    Anthropic: the model never saw the functions and answered in text; a ``function`` message in the history was
    a 400. They go as tools, and the call comes back as ``function_call`` with finish_reason ``function_call``."""
    ask: Any = [{"role": "user", "content": "Weather in Oslo?"}]
    first = oc.chat.completions.create(model="claude", messages=ask, functions=[LEGACY_FN])
    choice = first.choices[0]
    assert choice.finish_reason == "function_call" and not choice.message.tool_calls
    assert choice.message.function_call is not None and choice.message.function_call.name == "get_weather"
    assert json.loads(choice.message.function_call.arguments) == {"city": "Weather in Oslo?"}
    sent = ups.anthropic.traffic.last.body
    assert [t["name"] for t in sent["tools"]] == ["get_weather"] and sent["tool_choice"]["disable_parallel_tool_use"]
    history: Any = [*ask, {"role": "assistant", "content": None,
                           "function_call": choice.message.function_call.model_dump()},
                    {"role": "function", "name": "get_weather", "content": "4 C, rain"}]
    second = oc.chat.completions.create(model="claude", messages=history, functions=[LEGACY_FN])
    assert second.choices[0].message.content == "tool results: 4 C, rain"
    forced = oc.chat.completions.create(model="claude", messages=ask, functions=[LEGACY_FN],
                                        function_call={"name": "get_weather"})
    assert forced.choices[0].finish_reason == "function_call"
    assert ups.anthropic.traffic.last.body["tool_choice"]["type"] == "tool"
    none = oc.chat.completions.create(model="claude", messages=ask, functions=[LEGACY_FN], function_call="none")
    assert none.choices[0].finish_reason == "stop" and none.choices[0].message.function_call is None

    name, arguments, finish = "", "", None
    for chunk in oc.chat.completions.create(model="claude", messages=ask, functions=[LEGACY_FN], stream=True):
        delta = chunk.choices[0].delta if chunk.choices else None
        assert delta is None or not delta.tool_calls
        if delta is not None and delta.function_call is not None:
            name += delta.function_call.name or ""
            arguments += delta.function_call.arguments or ""
        finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
    assert (name, json.loads(arguments), finish) == ("get_weather", {"city": "Weather in Oslo?"}, "function_call")


@pytest.mark.parametrize(("mode", "sent_type"), [("auto", "auto"), ("required", "any")])
def test_allowed_tools_choice_on_anthropic(oc: openai.OpenAI, ups: Upstreams, mode: str, sent_type: str) -> None:
    """tool_choice ``allowed_tools`` (OpenAI: keep every tool defined, let the model use only some) was a 400
    on an Anthropic deployment ("tool_choice must be auto, none, required or a function"). Anthropic has no
    such choice: the model is offered only the allowed tools, with auto or any for the mode."""
    choice: Any = {"type": "allowed_tools", "allowed_tools": {
        "mode": mode, "tools": [{"type": "function", "function": {"name": "now"}}]}}
    resp = oc.chat.completions.create(model="claude", messages=[{"role": "user", "content": "time?"}],
                                      tools=[TRIP, NOW], tool_choice=choice)
    assert [c.function.name for c in resp.choices[0].message.tool_calls or []] == ["now"]  # type: ignore[union-attr]
    sent = ups.anthropic.traffic.last.body
    assert [t["name"] for t in sent["tools"]] == ["now"] and sent["tool_choice"] == {"type": sent_type}


def test_structured_output_on_a_claude_without_it(oc: openai.OpenAI, ups: Upstreams) -> None:
    """Claude models before Sonnet 4.5 / Opus 4.1 / Haiku 4.5 have no structured outputs: response_format
    json_schema (and strict tools) on such a deployment was Anthropic's 400. The schema is asked for in the
    system prompt instead, as for json_object, and tools go without strict."""
    ask: Any = [{"role": "user", "content": "Ann, 30, Oslo"}]
    resp = oc.chat.completions.create(model="claude-older", messages=ask, response_format={
        "type": "json_schema", "json_schema": {"name": "person", "schema": Person.model_json_schema()}})
    assert resp.choices[0].finish_reason == "stop"
    sent = ups.anthropic.traffic.last.body
    assert "output_config" not in sent and '"addresses"' in sent["system"]
    resp = oc.chat.completions.create(model="claude-older", messages=ask, tools=[openai.pydantic_function_tool(Person)])
    assert resp.choices[0].finish_reason == "tool_calls" and "strict" not in ups.anthropic.traffic.last.body["tools"][0]


def test_a_streamed_parallel_tool_loop_keeps_ids_both_ways(oc: openai.OpenAI, ac: anthropic.Anthropic,
                                                          ups: Upstreams) -> None:
    """Two rounds of a tool loop, streamed: the ids the client accumulated are the ones each upstream pairs."""
    calls = streamed_calls(oc, [TRIP, NOW], "Rome")
    msgs: Any = [{"role": "user", "content": "Rome"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for c in calls.values()]}]
    msgs += [{"role": "tool", "tool_call_id": c["id"], "content": [{"type": "text", "text": f"r{i}"}]}
             for i, c in calls.items()]
    answer = oc.chat.completions.create(model="claude", messages=msgs, tools=[TRIP, NOW])
    assert answer.choices[0].message.content == "tool results: r0 r1"
    sent = ups.anthropic.traffic.last.body["messages"]
    assert [b["id"] for b in sent[1]["content"] if b["type"] == "tool_use"] == [c["id"] for c in calls.values()]

    weather: Any = {"name": "get_weather",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    ask: Any = [{"role": "user", "content": "Oslo"}]
    with ac.messages.stream(model="oai", max_tokens=100, tools=[weather, {**weather, "name": "get_time"}],
                            messages=ask) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and len(uses) == 2
    results: Any = [{"type": "tool_result", "tool_use_id": u.id, "content": f"r{i}", "is_error": i == 1}
                    for i, u in enumerate(uses)]
    again = ac.messages.create(model="oai", max_tokens=100, tools=[weather], messages=[
        *ask, {"role": "assistant", "content": [u.model_dump() for u in uses]}, {"role": "user", "content": results}])
    assert again.content[0].type == "text" and again.content[0].text == "Tool results: r0; Error: r1"
    sent = ups.openai.traffic.last.body["messages"]
    assert [m["tool_call_id"] for m in sent if m["role"] == "tool"] == [u.id for u in uses]
