"""An upstream (or a proxy in front of it) that ignores ``stream: true`` and answers a stream request 200 with a
whole JSON answer: the gateway streams that answer on, in the client's own wire format, and bills the usage the
answer reported. Driven by the official SDKs: ``openai`` with stream=True and ``anthropic``'s messages.stream,
against an OpenAI-compatible deployment and an Anthropic one whose fakes never stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from aiohttp import web

from tests.integration.cut_calls_support import IN, MESSAGES, OUT, PRICES, ledger_row, new_key
from tests.integration.tenancy_support import gateway_config
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.servers import RunningServer, start_aiohttp_app

TOOL = {"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ANT_TOOL: Any = {"name": "weather", "input_schema": TOOL["function"]["parameters"]}


async def _completion(request: web.Request) -> web.Response:
    """OpenAI-compatible, stream ignored: the whole completion, a tool call when tools were offered."""
    body = await request.json()
    assert body["stream"] is True
    if body.get("tools"):
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]}
        finish = "tool_calls"
    else:
        message, finish = {"role": "assistant", "content": "The sea is wide."}, "stop"
    return web.json_response({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": 31, "completion_tokens": 4, "total_tokens": 35}})


async def _message(request: web.Request) -> web.Response:
    """Anthropic, stream ignored: the whole message, a tool_use block when tools were offered."""
    body = await request.json()
    assert body["stream"] is True
    if body.get("tools"):
        content: list[Any] = [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}]
        stop = "tool_use"
    else:
        content, stop = [{"type": "text", "text": "The sea is wide."}], "end_turn"
    return web.json_response({
        "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"], "content": content,
        "stop_reason": stop, "stop_sequence": None, "usage": {"input_tokens": 31, "output_tokens": 4}})


@pytest.fixture(scope="module")
def upstream() -> Iterator[RunningServer]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _completion)
    app.router.add_post("/v1/messages", _message)
    server = start_aiohttp_app(app, "never-streams")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("unstreamed") / "gw.db"


@pytest.fixture(scope="module")
def gw(db: Path, upstream: RunningServer) -> Iterator[RunningGateway]:
    config = gateway_config(db)
    config["models"] = [
        {"name": "compat", "provider": "openai_compatible", "model": "some-model", "api_base": upstream.url + "/v1",
         "api_key": "k", "prices": PRICES},
        {"name": "claude", "provider": "anthropic", "model": "claude-test-1", "api_base": upstream.url,
         "api_key": "k", "prices": PRICES},
    ]
    config["routing"] = {"*": {"num_retries": 0}}
    with running_gateway(config) as running:
        yield running


def _assert_billed_from_usage(db: Path, row: dict[str, Any]) -> None:
    assert (row["status"], row["usage_source"]) == (200, "provider")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (31, 4)
    assert row["cost_nano"] == 31 * IN + 4 * OUT


@pytest.mark.parametrize("model", ["compat", "claude"])
@pytest.mark.parametrize("tools", [False, True])
def test_the_openai_sdk_streams_the_whole_answer(gw: RunningGateway, db: Path, model: str, tools: bool) -> None:
    admin, key, client = new_key(gw, f"oai-sdk-{model}-{tools}")
    extra: Any = {"tools": [TOOL]} if tools else {}
    stream = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=50, stream=True,
                                            stream_options={"include_usage": True}, **extra)
    chunks = list(stream)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    if tools:
        calls = [t for d in deltas for t in d.tool_calls or ()]
        assert calls[0].function and calls[0].function.name == "weather"
        assert json.loads("".join(t.function.arguments or "" for t in calls if t.function)) == {"city": "Oslo"}
        assert finish == ["tool_calls"]
    else:
        assert "".join(d.content or "" for d in deltas) == "The sea is wide."
        assert finish == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (31, 4)
    _assert_billed_from_usage(db, ledger_row(db, admin, key["id"]))


@pytest.mark.parametrize("model", ["compat", "claude"])
@pytest.mark.parametrize("tools", [False, True])
def test_the_anthropic_sdk_streams_the_whole_answer(gw: RunningGateway, db: Path, model: str, tools: bool) -> None:
    admin, key, _ = new_key(gw, f"ant-sdk-{model}-{tools}")
    client = anthropic.Anthropic(base_url=gw.url, api_key=key["key"], max_retries=0, timeout=10)
    extra: Any = {"tools": [ANT_TOOL]} if tools else {}
    with client.messages.stream(model=model, max_tokens=50, messages=MESSAGES, **extra) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds.index("content_block_start") < kinds.index("content_block_stop") < kinds.index("message_delta")
    if tools:
        block = final.content[0]
        assert block.type == "tool_use" and block.name == "weather" and block.input == {"city": "Oslo"}
        assert final.stop_reason == "tool_use"
    else:
        assert [b.text for b in final.content if b.type == "text"] == ["The sea is wide."]
        assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (31, 4)
    _assert_billed_from_usage(db, ledger_row(db, admin, key["id"]))
