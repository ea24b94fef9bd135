"""Canonical chunks -> Anthropic SSE: the exact event order, tool blocks, usage, errors, and the SDK reading it."""

from __future__ import annotations

from typing import Any

import anthropic
import orjson
import pytest

from aigw import errors
from aigw.schema.anthropic import PRIVATE_KEY, START_USAGE
from aigw.schema.anthropic_stream import AnthropicStreamEncoder
from aigw.schema.replay import replay_chunks
from tests.unit.schema.anthropic_sdk import sdk_stream

USAGE = {
    "prompt_tokens": 50,
    "completion_tokens": 9,
    "total_tokens": 59,
    "prompt_tokens_details": {"cached_tokens": 20, "cache_write_tokens": 0},
}


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-9", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": choices, **extra}


def tool_delta(index: int, call_id: str | None = None, name: str | None = None, args: str = "") -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if call_id:
        call.update(id=call_id, type="function")
        call["function"]["name"] = name
    return {"tool_calls": [call]}


TEXT_STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    chunk({}, "stop"),
    chunk(None, usage=USAGE),
]
TOOL_STREAM = [
    chunk({"role": "assistant", "content": "Let me look."}),
    chunk(tool_delta(0, "call_a", "get_weather")),
    chunk(tool_delta(0, args='{"city":')),
    chunk(tool_delta(0, args=' "Oslo"}')),
    chunk(tool_delta(1, "call_b", "get_time", "{}")),
    chunk({}, "tool_calls"),
    chunk(None, usage=USAGE),
]


def encode(chunks: list[dict[str, Any]], start_usage: dict[str, Any] | None = None) -> bytes:
    """The SSE of ``chunks``; ``start_usage``: the usage known up front, in the first chunk (as a live
    Anthropic upstream's message_start, or a cached answer, puts it there)."""
    if start_usage is not None:
        chunks = [{**chunks[0], PRIVATE_KEY: {START_USAGE: start_usage}}, *chunks[1:]]
    encoder = AnthropicStreamEncoder("claude")
    return b"".join(encoder.feed(c) for c in chunks) + encoder.finish()


def parse(sse: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    assert sse.endswith(b"\n\n")
    for raw in sse.decode().strip().split("\n\n"):
        name_line, data_line = raw.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        name, data = name_line[7:], orjson.loads(data_line[6:])
        assert data["type"] == name
        events.append((name, data))
    return events


def test_text_stream_has_the_exact_event_order() -> None:
    events = parse(encode(TEXT_STREAM, start_usage={"prompt_tokens": 42, "completion_tokens": 0}))
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["model"] == "claude" and start["content"] == []
    assert start["usage"]["input_tokens"] == 42 and start["stop_reason"] is None
    assert events[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert [d["delta"]["text"] for n, d in events if n == "content_block_delta"] == ["Hel", "lo"]
    assert events[6][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": 30,
            "output_tokens": 9,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 20,
        },
    }


def test_tool_calls_become_tool_use_blocks_with_input_json_deltas() -> None:
    events = parse(encode(TOOL_STREAM))
    starts = [d for n, d in events if n == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use", "tool_use"]
    assert starts[1]["content_block"] == {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}
    assert [s["index"] for s in starts] == [0, 1, 2]
    json_parts = [
        (d["index"], d["delta"]["partial_json"]) for n, d in events if n == "content_block_delta" and d["index"] > 0
    ]
    assert json_parts == [(1, '{"city":'), (1, ' "Oslo"}'), (2, "{}")]
    stops = [d["index"] for n, d in events if n == "content_block_stop"]
    assert stops == [0, 1, 2]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    # every block is stopped before the next one starts
    open_blocks: set[int] = set()
    for name, data in events:
        if name == "content_block_start":
            assert not open_blocks
            open_blocks.add(data["index"])
        elif name == "content_block_stop":
            open_blocks.remove(data["index"])


def test_empty_stream_still_closes_the_message() -> None:
    events = parse(AnthropicStreamEncoder("claude").finish())
    assert [name for name, _ in events] == ["message_start", "ping", "message_delta", "message_stop"]
    assert events[2][1]["usage"] == {"output_tokens": 0}


def test_finish_is_idempotent_and_stop_details_are_carried() -> None:
    encoder = AnthropicStreamEncoder("claude")
    encoder.feed(chunk({"content": "a"}))
    encoder.feed(chunk({}, "stop", _anthropic={"stop_reason": "stop_sequence", "stop_sequence": "END"}))
    events = parse(encoder.finish())
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    assert encoder.finish() == b""


def test_a_stop_string_a_compatible_server_names_closes_the_stream_as_a_stop_sequence() -> None:
    encoder = AnthropicStreamEncoder("claude")
    encoder.feed(chunk({"content": "a"}))
    last = chunk({}, "stop")
    last["choices"][0]["stop_reason"] = "END"  # vLLM's final chunk names the stop string it matched
    encoder.feed(last)
    events = parse(encoder.finish())
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def test_thinking_signature_and_redacted_thinking() -> None:
    chunks = [
        chunk({"reasoning_content": "hmm"}),
        chunk({"_anthropic": {"signature": "sig_9"}}),
        chunk({"_anthropic": {"redacted_thinking": "opaque"}}),
        chunk({"content": "done"}),
        chunk({}, "stop"),
    ]
    _, final = sdk_stream(encode(chunks))
    assert [b.type for b in final.content] == ["thinking", "redacted_thinking", "text"]
    assert final.content[0].thinking == "hmm" and final.content[0].signature == "sig_9"
    assert final.content[1].data == "opaque"


@pytest.mark.parametrize(
    ("err", "err_type"),
    [(errors.Unavailable("busy"), "overloaded_error"), (errors.UpstreamError("cut"), "api_error")],
)
def test_error_frame(err: errors.GatewayError, err_type: str) -> None:
    encoder = AnthropicStreamEncoder("claude")
    head = encoder.feed(chunk({"content": "partial"}))
    events = parse(head + encoder.error_frame(err))
    assert events[-1] == ("error", {"type": "error", "error": {"type": err_type, "message": err.message}})
    assert encoder.finish() == b""


def test_the_sdk_builds_the_same_message_from_our_stream() -> None:
    events, final = sdk_stream(encode(TOOL_STREAM, start_usage=USAGE))
    assert final.content[0].text == "Let me look."
    assert final.content[1].name == "get_weather" and final.content[1].input == {"city": "Oslo"}
    assert final.content[2].id == "call_b" and final.content[2].input == {}
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 9 and final.usage.cache_read_input_tokens == 20
    assert events[0].type == "message_start"


def test_the_sdk_raises_on_our_error_frame() -> None:
    encoder = AnthropicStreamEncoder("claude")
    sse = encoder.feed(chunk({"content": "partial"})) + encoder.error_frame(errors.Unavailable("busy"))
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        sdk_stream(sse)


def test_usage_known_up_front_goes_in_message_start() -> None:
    """Usage known before the first event (a cached answer's, a live upstream's message_start): message_start
    carries the input counts (Anthropic's message_start does), message_delta the output."""
    events = parse(encode(TEXT_STREAM, start_usage=USAGE))
    start = events[0][1]["message"]["usage"]
    assert start == {"input_tokens": 30, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 20,
                     "output_tokens": 0}
    assert events[-2][1]["usage"]["output_tokens"] == 9



WRITES = {"prompt_tokens": 1530, "completion_tokens": 9, "total_tokens": 1539,
          "prompt_tokens_details": {"cached_tokens": 20, "cache_write_tokens": 1500, "cache_write_1h_tokens": 1000}}
SPLIT = {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1000}
LIVE = [chunk({"role": "assistant", "content": ""}, **{PRIVATE_KEY: {START_USAGE: WRITES}}), *TEXT_STREAM[1:-1],
        chunk(None, usage=WRITES)]  # an Anthropic upstream's stream: its message_start counts come first


@pytest.mark.parametrize("chunks", [LIVE, replay_chunks({  # what a cached answer replays
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m", "usage": WRITES,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}]})],
    ids=["live", "cached-replay"])
def test_cache_writes_are_split_by_ttl_in_message_start_and_message_delta(chunks: list[dict[str, Any]]) -> None:
    """A stream's usage carries ``cache_creation`` as Anthropic's does, in message_start (where the SDK
    takes it from: its message_delta type has no such field) and message_delta alike."""
    events = parse(encode(chunks))
    assert events[0][1]["message"]["usage"]["cache_creation"] == SPLIT
    assert events[-2][1]["usage"]["cache_creation"] == SPLIT and events[-2][1]["usage"]["input_tokens"] == 10
    _, final = sdk_stream(encode(chunks))
    assert final.usage.cache_creation is not None and final.usage.cache_creation_input_tokens == 1500
    assert (final.usage.cache_creation.ephemeral_5m_input_tokens,
            final.usage.cache_creation.ephemeral_1h_input_tokens) == (500, 1000)
