"""Every provider behind both inbound APIs, with the official SDKs as clients.

The same scenarios (plain, stream, tool call round trip) run for each provider kind
through its fake upstream, and through the OpenAI and the Anthropic endpoint.
"""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from tests.integration.conftest import Upstreams
from tests.support.gateway import RunningGateway

MODELS = ["oai", "az", "compat", "claude", "mock"]
PROVIDER = {"oai": "openai", "az": "azure", "compat": "openai_compatible", "claude": "anthropic", "mock": "mock"}
WORD_SCHEMA = {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}
TOOL_OAI = {"type": "function",
            "function": {"name": "lookup", "description": "Look a word up", "parameters": WORD_SCHEMA}}
TOOL_ANT = {"name": "lookup", "description": "Look a word up", "input_schema": WORD_SCHEMA}


@pytest.fixture
def oai(matrix_gateway: RunningGateway, ups: Upstreams) -> openai.OpenAI:
    return openai.OpenAI(base_url=matrix_gateway.v1, api_key="k", max_retries=0)


@pytest.fixture
def ant(matrix_gateway: RunningGateway, ups: Upstreams) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=matrix_gateway.url, api_key="k", max_retries=0)


@pytest.mark.parametrize("model", MODELS)
def test_openai_api_plain_and_stream(oai: openai.OpenAI, model: str) -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour"}]
    raw = oai.chat.completions.with_raw_response.create(model=model, messages=msgs, max_tokens=64)  # type: ignore[arg-type]
    resp = raw.parse()
    assert raw.headers["x-aigw-provider"] == PROVIDER[model]
    assert resp.choices[0].message.content and resp.usage and resp.usage.completion_tokens > 0
    chunks = list(oai.chat.completions.create(model=model, messages=msgs, max_tokens=64, stream=True,  # type: ignore[arg-type]
                                              stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == resp.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_openai_api_tool_call_round_trip(oai: openai.OpenAI, model: str, stream: bool) -> None:
    msgs: list[dict[str, object]] = [{"role": "user", "content": "Look up 'gateway'"}]
    if stream:
        calls: dict[int, dict[str, str]] = {}
        for chunk in oai.chat.completions.create(model=model, messages=msgs, tools=[TOOL_OAI], stream=True,  # type: ignore[arg-type,list-item]
                                                 max_tokens=64):
            for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                entry = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
                entry["id"] += tc.id or ""
                entry["name"] += (tc.function.name or "") if tc.function else ""
                entry["args"] += (tc.function.arguments or "") if tc.function else ""
        call = calls[0]
        call_id, name, args = call["id"], call["name"], call["args"]
    else:
        first = oai.chat.completions.create(model=model, messages=msgs, tools=[TOOL_OAI], max_tokens=64)  # type: ignore[arg-type,list-item]
        assert first.choices[0].finish_reason == "tool_calls"
        tc = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        call_id, name, args = tc.id, tc.function.name, tc.function.arguments  # type: ignore[union-attr]
    assert name == "lookup" and isinstance(json.loads(args), dict)
    msgs.append({"role": "assistant", "content": None,
                 "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]})
    msgs.append({"role": "tool", "tool_call_id": call_id, "content": "a door"})
    second = oai.chat.completions.create(model=model, messages=msgs, tools=[TOOL_OAI], max_tokens=64)  # type: ignore[arg-type,list-item]
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_api_plain_and_stream(ant: anthropic.Anthropic, model: str) -> None:
    kwargs = {"model": model, "max_tokens": 64, "system": "Be brief.",
              "messages": [{"role": "user", "content": "Name a colour"}]}
    raw = ant.messages.with_raw_response.create(**kwargs)  # type: ignore[call-overload]
    msg = raw.parse()
    assert raw.headers["x-aigw-provider"] == PROVIDER[model]
    assert msg.content[0].type == "text" and msg.stop_reason == "end_turn" and msg.usage.output_tokens > 0
    with ant.messages.stream(**kwargs) as stream:  # type: ignore[arg-type]
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert final.content[0].text == msg.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_api_tool_use_round_trip(ant: anthropic.Anthropic, model: str) -> None:
    first = ant.messages.create(model=model, max_tokens=64, tools=[TOOL_ANT],  # type: ignore[list-item]
                                messages=[{"role": "user", "content": "Look up 'gateway'"}])
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "lookup" and isinstance(use.input, dict)
    second = ant.messages.create(
        model=model, max_tokens=64, tools=[TOOL_ANT],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "Look up 'gateway'"},
            {"role": "assistant",
             "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "a door"}]},
        ],
    )
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"


def test_upstream_sees_its_own_wire_format(oai: openai.OpenAI, ups: Upstreams) -> None:
    oai.chat.completions.create(model="claude", messages=[{"role": "system", "content": "S"},  # type: ignore[list-item]
                                                          {"role": "user", "content": "hi"}], max_tokens=20)
    sent = ups.anthropic.traffic.last.body
    assert sent["system"] and sent["messages"][0]["role"] == "user" and sent["model"] == "claude-test-1"
    oai.chat.completions.create(model="az", messages=[{"role": "user", "content": "hi"}])
    last = ups.azure.traffic.last
    assert "/openai/deployments/chat/chat/completions" in last.path and "api-version" in last.query
    assert last.headers.get("api-key") == "az-key"


def test_anthropic_only_fields_never_reach_an_openai_upstream(ant: anthropic.Anthropic, ups: Upstreams) -> None:
    ant.messages.create(
        model="oai", max_tokens=32, extra_body={"top_k": 5},
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user",
                   "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}],
    )
    sent = ups.openai.traffic.last.body
    assert "_anthropic" not in sent and "top_k" not in sent
    assert "cache_control" not in str(sent)
    ant.messages.create(model="claude", max_tokens=32, extra_body={"top_k": 5},
                        messages=[{"role": "user", "content": "hi"}])
    assert ups.anthropic.traffic.last.body["top_k"] == 5


def test_an_openai_client_can_send_anthropic_beta_to_an_anthropic_model(oai: openai.OpenAI, ups: Upstreams) -> None:
    betas = {"anthropic-beta": "context-1m-2025-08-07"}
    answer = oai.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}],
                                         max_tokens=20, extra_headers=betas)
    assert ups.anthropic.traffic.last.headers["anthropic-beta"] == "context-1m-2025-08-07"
    assert "_anthropic" not in answer.model_dump()
    for model, fake in (("oai", ups.openai), ("az", ups.azure), ("compat", ups.compat)):
        oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], extra_headers=betas)
        sent = fake.traffic.last
        assert "anthropic-beta" not in {k.lower() for k in sent.headers}, model
        assert "_anthropic" not in sent.body and "context-1m" not in str(sent.body), model


@pytest.mark.parametrize(("model", "upstream_path"), [
    ("oai", "/v1/chat/completions"),  # a chat model: OpenAI's own /completions would answer 404 "a chat model"
    ("az", "/openai/deployments/chat/chat/completions"),
])
def test_a_legacy_completion_reaches_each_upstream_where_it_serves_it(
        oai: openai.OpenAI, ups: Upstreams, model: str, upstream_path: str) -> None:
    fake = {"oai": ups.openai, "az": ups.azure}[model]
    answer = oai.completions.create(model=model, prompt="Say hi", max_tokens=20)
    assert answer.object == "text_completion" and answer.choices[0].text
    assert fake.traffic.last.path == upstream_path
    text = "".join(c.choices[0].text for c in oai.completions.create(model=model, prompt="Say hi", max_tokens=20,
                                                                     stream=True) if c.choices)
    assert text and fake.traffic.last.path == upstream_path
