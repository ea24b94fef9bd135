# ruff: noqa: F811  (pytest fixtures imported from conftest_anthropic)
"""The Anthropic adapter against a fake Anthropic API on loopback: what a caller of the provider sees."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from aigw import errors
from aigw.providers.anthropic.client import AnthropicProvider, build
from aigw.providers.base import CallOptions, Provider, SupportsModelList, Timeouts
from aigw.providers.http import HttpClients
from aigw.schema.anthropic import canonical_to_message, messages_request_to_canonical
from aigw.schema.anthropic_stream import AnthropicStreamEncoder
from tests.fakes.anthropic_upstream import API_KEY, AnthropicUpstream, anthropic_error, overloaded_event
from tests.fakes.faults import Fault
from tests.providers.conftest_anthropic import (  # noqa: F401  (fixtures)
    anthropic_deployment,
    anthropic_fake,
    anthropic_provider,
    anthropic_server,
)
from tests.support.servers import free_port
from tests.unit.schema.anthropic_sdk import sdk_message, sdk_stream

CALL = CallOptions()
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "claude", "messages": list(messages), **extra}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


async def collect(provider: AnthropicProvider, body: dict[str, Any], call: CallOptions = CALL) -> list[dict[str, Any]]:
    return [chunk async for chunk in provider.stream_chat(body, call)]


def streamed_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def streamed_calls(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for call in (chunk["choices"] or [{}])[0].get("delta", {}).get("tool_calls", []):
            slot = calls.setdefault(
                call["index"], {"id": call.get("id"), "name": call["function"].get("name"), "arguments": ""}
            )
            slot["arguments"] += call["function"].get("arguments") or ""
    return [calls[i] for i in sorted(calls)]


def test_provider_satisfies_the_contract(anthropic_server: Any) -> None:
    provider = build(anthropic_deployment(anthropic_server[1].url), HttpClients())
    assert isinstance(provider, Provider) and isinstance(provider, SupportsModelList)
    assert provider.kind == "anthropic" and provider.upstream_model == "claude-test-1"


# ---------------------------------------------------------------- happy paths


async def test_chat_sends_anthropic_headers_and_maps_the_answer(
    anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream
) -> None:
    body = chat({"role": "system", "content": "Be brief."}, user("hello there"), temperature=0.2)
    resp = await anthropic_provider.chat(body, CallOptions(headers={"x-request-id": "r1"}))
    assert resp["object"] == "chat.completion"
    assert resp["choices"][0]["message"] == {"role": "assistant", "content": "echo: hello there"}
    assert resp["choices"][0]["finish_reason"] == "stop"
    assert resp["usage"]["completion_tokens"] == 3 and resp["usage"]["total_tokens"] > 3
    sent = anthropic_fake.traffic.last
    headers = {k.lower(): v for k, v in sent.headers.items()}
    assert sent.path == "/v1/messages"
    assert headers["x-api-key"] == API_KEY and headers["anthropic-version"] == "2023-06-01"
    assert headers["x-request-id"] == "r1" and headers["content-type"] == "application/json"
    assert sent.body["system"] == "Be brief." and sent.body["max_tokens"] == 4096


async def test_tool_calls_round_trip(anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream) -> None:
    first = await anthropic_provider.chat(chat(user("Paris"), tools=[WEATHER, TIME]), CALL)
    message = first["choices"][0]["message"]
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["get_weather", "get_time"]
    assert orjson.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris", "days": 1}
    results = [
        {"role": "tool", "tool_call_id": c["id"], "content": f"result of {c['function']['name']}"}
        for c in message["tool_calls"]
    ]
    second = await anthropic_provider.chat(chat(user("Paris"), message, *results, tools=[WEATHER, TIME]), CALL)
    assert second["choices"][0]["message"]["content"] == "tool results: result of get_weather result of get_time"
    turn = anthropic_fake.traffic.last.body["messages"][-1]
    assert [b["type"] for b in turn["content"]] == ["tool_result", "tool_result"]


async def test_parallel_tool_calls_false_asks_for_one_tool(anthropic_provider: AnthropicProvider) -> None:
    resp = await anthropic_provider.chat(chat(user("Paris"), tools=[WEATHER, TIME], parallel_tool_calls=False), CALL)
    assert len(resp["choices"][0]["message"]["tool_calls"]) == 1


async def test_stream_text_ends_with_finish_and_usage(anthropic_provider: AnthropicProvider) -> None:
    chunks = await collect(anthropic_provider, chat(user("one two three")))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert streamed_text(chunks) == "echo: one two three"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4


async def test_stream_tool_arguments_match_the_plain_answer(anthropic_provider: AnthropicProvider) -> None:
    body = chat(user("Lyon"), tools=[WEATHER])
    plain = (await anthropic_provider.chat(body, CALL))["choices"][0]["message"]["tool_calls"]
    streamed = streamed_calls(await collect(anthropic_provider, body))
    assert [(c["id"], c["name"], orjson.loads(c["arguments"])) for c in streamed] == [
        (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in plain
    ]


async def test_stop_sequences_and_max_tokens(anthropic_provider: AnthropicProvider) -> None:
    resp = await anthropic_provider.chat(chat(user("a b STOP c"), stop=["STOP"]), CALL)
    assert resp["choices"][0]["message"]["content"] == "echo: a b "
    assert resp["_anthropic"] == {"stop_reason": "stop_sequence", "stop_sequence": "STOP"}
    resp = await anthropic_provider.chat(chat(user("a b c d"), max_tokens=2), CALL)
    assert resp["choices"][0]["finish_reason"] == "length"


async def test_prompt_cache_usage_is_reported(anthropic_provider: AnthropicProvider) -> None:
    system = {
        "role": "system",
        "content": [{"type": "text", "text": "a long shared document " * 20, "cache_control": {"type": "ephemeral"}}],
    }
    first = (await anthropic_provider.chat(chat(system, user("q1")), CALL))["usage"]
    second = (await anthropic_provider.chat(chat(system, user("q2")), CALL))["usage"]
    assert first["prompt_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 80}
    assert second["prompt_tokens_details"] == {"cached_tokens": 80, "cache_write_tokens": 0}
    assert second["prompt_tokens"] == first["prompt_tokens"]


async def test_private_fields_reach_the_upstream(
    anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream
) -> None:
    private = {"top_k": 3, "thinking": {"type": "enabled", "budget_tokens": 1024}, "anthropic_beta": ["x-2025"]}
    resp = await anthropic_provider.chat(chat(user("why"), max_tokens=2000, _anthropic=private), CALL)
    sent = anthropic_fake.traffic.last
    assert sent.body["top_k"] == 3 and sent.headers["anthropic-beta"] == "x-2025"
    assert resp["choices"][0]["message"]["reasoning_content"] == "The user said: why"
    assert resp["_anthropic"]["thinking"][0]["signature"].startswith("sig_")


async def test_beta_flags_merge_with_the_deployments_own_without_repeats(
    anthropic_server: tuple[AnthropicUpstream, Any], anthropic_fake: AnthropicUpstream
) -> None:
    deployment = anthropic_deployment(anthropic_server[1].url, headers={"Anthropic-Beta": "ops-2025,x-2025"})
    clients = HttpClients()
    try:
        provider = build(deployment, clients)
        body = chat(user("hi"), _anthropic={"anthropic_beta": ["x-2025", "y-2025"]})
        await provider.chat(body, CALL)
        await collect(provider, {**body, "stream": True})
    finally:
        await clients.aclose()
    for sent in anthropic_fake.traffic.log:
        betas = [v for k, v in sent.headers.items() if k.lower() == "anthropic-beta"]
        assert betas == ["ops-2025,x-2025,y-2025"]


async def test_list_models_is_a_free_get(
    anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream
) -> None:
    models = await anthropic_provider.list_models(CALL)
    assert "claude-test-1" in [m["id"] for m in models["data"]]
    assert anthropic_fake.traffic.last.method == "GET"


# ---------------------------------------------------------------- upstream errors


@pytest.mark.parametrize(
    ("fault", "cls", "status"),
    [
        (anthropic_error(429, "rate_limit_error", "slow down", retry_after=2), errors.RateLimited, 429),
        (anthropic_error(529, "overloaded_error", "Overloaded"), errors.Unavailable, 503),
        (anthropic_error(500, "api_error", "Internal server error"), errors.UpstreamError, 502),
        (anthropic_error(402, "billing_error", "Your credit balance is too low"), errors.QuotaExceeded, 429),
        (anthropic_error(413, "request_too_large", "Request exceeds the maximum size"), errors.PayloadTooLarge, 413),
        (Fault(status=502, body="<html>bad gateway</html>"), errors.UpstreamError, 502),
    ],
)
async def test_upstream_failures_map_to_kinds(
    anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream, fault: Fault, cls: type, status: int
) -> None:
    for stream in (False, True):
        anthropic_fake.faults.push(fault)
        with pytest.raises(cls) as info:
            if stream:
                await collect(anthropic_provider, chat(user("hi")))
            else:
                await anthropic_provider.chat(chat(user("hi")), CALL)
        assert info.value.status == status
        if cls is errors.RateLimited:
            assert info.value.retry_after == 2.0


async def test_requests_the_real_api_rejects(anthropic_server: Any, anthropic_fake: AnthropicUpstream) -> None:
    url = anthropic_server[1].url
    clients = HttpClients()
    try:
        wrong_key = build(anthropic_deployment(url, api_key="sk-wrong"), clients)
        with pytest.raises(errors.AuthError) as auth:
            await wrong_key.chat(chat(user("hi")), CALL)
        assert auth.value.status == 502 and auth.value.code == "upstream_auth"
        unknown = build(anthropic_deployment(url, model="claude-nope"), clients)
        with pytest.raises(errors.UpstreamModelNotFound, match="claude-nope"):
            await unknown.chat(chat(user("hi")), CALL)
        good = build(anthropic_deployment(url), clients)
        with pytest.raises(errors.InvalidRequest, match='first message must use the "user" role'):
            await good.chat(chat({"role": "assistant", "content": "hi"}), CALL)
        anthropic_fake.context_limit = 5
        with pytest.raises(errors.ContextLengthExceeded):
            await good.chat(chat(user("one two three four five six")), CALL)
    finally:
        anthropic_fake.context_limit = 200_000
        await clients.aclose()


async def test_non_json_answers_are_upstream_errors(
    anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream
) -> None:
    anthropic_fake.faults.push(Fault(non_json=True))
    with pytest.raises(errors.UpstreamError, match="not JSON"):
        await anthropic_provider.chat(chat(user("hi")), CALL)
    anthropic_fake.faults.push(Fault(non_json=True))
    with pytest.raises(errors.UpstreamError, match="not JSON"):
        await collect(anthropic_provider, chat(user("hi")))


async def test_unreachable_upstream_is_unavailable() -> None:
    clients = HttpClients()
    try:
        provider = build(anthropic_deployment(f"http://127.0.0.1:{free_port()}"), clients)
        with pytest.raises(errors.Unavailable):
            await provider.chat(chat(user("hi")), CALL)
    finally:
        await clients.aclose()


# ---------------------------------------------------------------- time limits and broken streams


async def test_slow_headers_time_out(anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream) -> None:
    anthropic_fake.faults.push(Fault(delay_headers=2.0))
    with pytest.raises(errors.UpstreamTimeout):
        await anthropic_provider.chat(chat(user("hi")), CallOptions(timeouts=Timeouts(total=0.2)))
    assert await anthropic_fake.traffic.wait_for("disconnects", 1) == 1


async def test_stream_first_token_timeout(
    anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream
) -> None:
    anthropic_fake.faults.push(Fault(delay_first_chunk=2.0))
    with pytest.raises(errors.UpstreamTimeout, match="first token"):
        await collect(anthropic_provider, chat(user("hi")), CallOptions(timeouts=Timeouts(first_token=0.2)))
    anthropic_fake.faults.push(Fault(delay_headers=2.0))
    with pytest.raises(errors.UpstreamTimeout, match="first token"):
        await collect(anthropic_provider, chat(user("hi")), CallOptions(timeouts=Timeouts(first_token=0.2)))


@pytest.mark.parametrize("after", [0, 1, 4])
async def test_stream_cut_mid_way_is_an_error_never_a_clean_end(
    anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream, after: int
) -> None:
    anthropic_fake.faults.push(Fault(cut_after=after))
    seen: list[dict[str, Any]] = []
    with pytest.raises(errors.UpstreamError):
        async for chunk in anthropic_provider.stream_chat(chat(user("a b c d e f")), CALL):
            seen.append(chunk)
    assert not any(c["choices"] and c["choices"][0]["finish_reason"] for c in seen)


async def test_stream_ending_without_message_stop_is_an_error(
    anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream
) -> None:
    anthropic_fake.faults.push(Fault(no_done=True))
    seen: list[dict[str, Any]] = []
    with pytest.raises(errors.UpstreamError, match="before message_stop"):
        async for chunk in anthropic_provider.stream_chat(chat(user("a b c")), CALL):
            seen.append(chunk)
    assert seen and not any(c["choices"] and c["choices"][0]["finish_reason"] for c in seen)


async def test_stream_error_event_mid_way(
    anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream
) -> None:
    anthropic_fake.faults.push(Fault(stream_error=overloaded_event(), cut_after=3))
    seen: list[dict[str, Any]] = []
    with pytest.raises(errors.Unavailable):
        async for chunk in anthropic_provider.stream_chat(chat(user("a b c")), CALL):
            seen.append(chunk)
    assert seen  # the error came after the stream had started


async def test_abandoned_stream_closes_the_upstream_connection(
    anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream
) -> None:
    anthropic_fake.faults.push(Fault(chunk_delay=0.05))
    stream = anthropic_provider.stream_chat(chat(user("many words " * 20)), CALL)
    await anext(stream)
    await anext(stream)
    await stream.aclose()  # what a client disconnect does to the gateway's consumer
    assert await anthropic_fake.traffic.wait_for("disconnects", 1) == 1


async def test_cancelled_stream_closes_the_upstream_connection(
    anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream
) -> None:
    anthropic_fake.faults.push(Fault(chunk_delay=0.05))

    async def consume() -> None:
        async for _ in anthropic_provider.stream_chat(chat(user("many words " * 20)), CALL):
            pass

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.15)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await anthropic_fake.traffic.wait_for("disconnects", 1) == 1


# ---------------------------------------------------------------- Anthropic in, Anthropic out


async def test_anthropic_client_through_the_adapter_round_trips_thinking_and_tools(
    anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream
) -> None:
    """Inbound converters + this adapter: what /v1/messages does for an Anthropic model."""
    tools = [{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}]
    turn1 = {
        "model": "claude",
        "max_tokens": 2000,
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": tools,
        "messages": [{"role": "user", "content": "Oslo"}],
    }
    encoder = AnthropicStreamEncoder("claude")
    sse = b""
    async for chunk in anthropic_provider.stream_chat(messages_request_to_canonical(turn1), CALL):
        sse += encoder.feed(chunk)
    _, final = sdk_stream(sse + encoder.finish())
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].signature.startswith("sig_") and final.stop_reason == "tool_use"

    assistant = [b.model_dump(exclude_none=True) for b in final.content]
    tool_use = assistant[2]
    turn2 = {
        **turn1,
        "stream": False,
        "messages": [
            *turn1["messages"],
            {"role": "assistant", "content": assistant},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"], "content": "3 C"}]},
        ],
    }
    answer = await anthropic_provider.chat(messages_request_to_canonical(turn2), CALL)
    message = sdk_message(canonical_to_message(answer, "claude"))
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[1].text == "tool results: 3 C" and message.stop_reason == "end_turn"
    sent = anthropic_fake.traffic.last.body["messages"][1]["content"]
    assert sent[0] == assistant[0]  # the signed thinking block went back upstream untouched
