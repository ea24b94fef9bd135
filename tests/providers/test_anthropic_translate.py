"""Pure translation canonical <-> Anthropic Messages, checked on wire fixtures (no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from aigw import errors
from aigw.providers.anthropic.errors import map_error, map_stream_error
from aigw.providers.anthropic.strict_schema import JSON_OBJECT_INSTRUCTION
from aigw.providers.anthropic.translate import (
    beta_header,
    merge_betas,
    to_anthropic_request,
)
from aigw.providers.anthropic.translate_response import to_canonical_response
from aigw.providers.anthropic.translate_stream import StreamTranslator
from aigw.schema.anthropic import PRIVATE_KEY, START_USAGE
from aigw.types import JSON

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"


def fixture(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def sse_events(name: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for raw in (FIXTURES / name).read_text().strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in raw.splitlines())
        events.append((lines["event"], orjson.loads(lines["data"])))
    return events


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# ---------------------------------------------------------------- requests


def test_full_request_maps_every_feature() -> None:
    case = fixture("request_full.json")
    assert to_anthropic_request(case["canonical"], "claude-sonnet-4-5") == case["anthropic"]


def test_minimal_request_gets_default_max_tokens_and_string_content() -> None:
    req = to_anthropic_request({"model": "x", "messages": [user("hi")]}, "claude-test-1", stream=True)
    assert req == {
        "model": "claude-test-1",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }


def test_consecutive_same_role_turns_are_merged() -> None:
    body = {"model": "x", "messages": [user("a"), user("b"), {"role": "assistant", "content": "c"}]}
    turns = to_anthropic_request(body, "m")["messages"]
    assert turns == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "c"},
    ]


def test_tool_choice_variants() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    base = {"model": "x", "messages": [user("hi")], "tools": tools}
    cases = {
        "auto": {"type": "auto"},
        "none": {"type": "none"},
        "required": {"type": "any"},
    }
    for choice, expected in cases.items():
        assert to_anthropic_request({**base, "tool_choice": choice}, "m")["tool_choice"] == expected
    named = {"type": "function", "function": {"name": "f"}}
    assert to_anthropic_request({**base, "tool_choice": named}, "m")["tool_choice"] == {"type": "tool", "name": "f"}
    assert "tool_choice" not in to_anthropic_request(base, "m")
    no_parallel = to_anthropic_request({**base, "parallel_tool_calls": False}, "m")
    assert no_parallel["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_response_format_json_schema_and_json_object() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}
    req = to_anthropic_request({"model": "x", "messages": [user("hi")], "response_format": fmt}, "m")
    closed = {**schema, "additionalProperties": False}  # Anthropic's grammar takes closed objects only
    assert req["output_config"] == {"format": {"type": "json_schema", "schema": closed}}
    req = to_anthropic_request(
        {"model": "x", "messages": [user("hi")], "response_format": {"type": "json_object"}}, "m"
    )
    assert req["system"] == JSON_OBJECT_INSTRUCTION


def test_cache_control_survives_on_system_parts_and_tools() -> None:
    cc = {"type": "ephemeral"}
    body = {
        "model": "x",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "long doc", "cache_control": cc}]},
            {"role": "user", "content": [{"type": "text", "text": "q", "cache_control": cc}]},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}, "cache_control": cc}],
    }
    req = to_anthropic_request(body, "m")
    assert req["system"] == [{"type": "text", "text": "long doc", "cache_control": cc}]
    assert req["messages"][0]["content"] == [{"type": "text", "text": "q", "cache_control": cc}]
    assert req["tools"][0]["cache_control"] == cc


def test_private_anthropic_fields_are_merged_and_beta_goes_to_a_header() -> None:
    body = {
        "model": "x",
        "messages": [
            user("hi"),
            {
                "role": "assistant",
                "content": "ok",
                "_anthropic": {"thinking": [{"type": "thinking", "thinking": "t", "signature": "s"}]},
            },
            {"role": "user", "content": "more"},
        ],
        "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object"}}},
        "_anthropic": {
            "top_k": 5,
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "output_config": {"effort": "low"},
            "anthropic_beta": ["b1", "b2"],
        },
    }
    req = to_anthropic_request(body, "m")
    assert req["top_k"] == 5 and req["thinking"]["budget_tokens"] == 2048
    closed = {"type": "object", "properties": {}, "additionalProperties": False}
    assert req["output_config"] == {"format": {"type": "json_schema", "schema": closed}, "effort": "low"}
    assert "anthropic_beta" not in req
    assert req["messages"][1]["content"][0] == {"type": "thinking", "thinking": "t", "signature": "s"}
    assert beta_header(body) == "b1,b2"
    assert beta_header({"model": "x"}) is None


def test_the_clients_beta_flags_add_to_the_operators_each_once() -> None:
    assert merge_betas(None, "b1,b2") == "b1,b2"
    assert merge_betas("ops-1, b1", "b1,b2") == "ops-1,b1,b2"


def test_tool_message_private_fields_go_into_the_tool_result() -> None:
    body = {
        "model": "x",
        "messages": [
            user("hi"),
            {"role": "assistant", "tool_calls": [{"id": "t1", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "boom", "_anthropic": {"is_error": True}},
        ],
    }
    turns = to_anthropic_request(body, "m")["messages"]
    assert turns[2]["content"] == [{"type": "tool_result", "tool_use_id": "t1", "content": "boom", "is_error": True}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "x", "messages": []}, "messages"),
        ({"model": "x", "messages": [{"role": "system", "content": "only system"}]}, "messages"),
        ({"model": "x", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"model": "x", "messages": [user("a")], "n": 2}, "n"),
        (
            {"model": "x", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "messages.0.content.0",
        ),
        (
            {
                "model": "x",
                "messages": [
                    user("a"),
                    {"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{"}}]},
                ],
            },
            "messages.1.tool_calls.0.function.arguments",
        ),
        ({"model": "x", "messages": [user("a")], "tools": [{"type": "web_search"}]}, "tools.0"),
    ],
)
def test_requests_anthropic_cannot_take_are_refused_with_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(errors.InvalidRequest) as info:
        to_anthropic_request(body, "m")
    assert info.value.param == param


WEATHER_TOOL = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
CUSTOM_TOOL = {"type": "custom", "custom": {"name": "run_sql", "format": {"type": "text"}}}
CUSTOM_CALL = {"id": "c1", "type": "custom", "custom": {"name": "run_sql", "input": "SELECT 1"}}


@pytest.mark.parametrize(("extra", "param", "what"), [
    ({"tools": [WEATHER_TOOL, CUSTOM_TOOL]}, "tools.1", "custom tools"),
    ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "custom", "custom": {"name": "run_sql"}}}, "tool_choice",
     "a custom tool_choice"),
    ({"messages": [user("a"), {"role": "assistant", "content": None, "tool_calls": [CUSTOM_CALL]},
                   {"role": "tool", "tool_call_id": "c1", "content": "1"}]}, "messages.1.tool_calls.0",
     "custom tool calls"),
], ids=["tool", "tool_choice", "history"])
def test_custom_tools_are_refused_by_name(extra: dict[str, Any], param: str, what: str) -> None:
    # no faithful twin: Anthropic tools take a JSON object, and a grammar cannot be carried
    with pytest.raises(errors.InvalidRequest) as info:
        to_anthropic_request({"model": "x", "messages": [user("a")], **extra}, "m")
    assert info.value.param == param and info.value.status == 400
    assert f"anthropic models do not support {what}" in info.value.message


# ---------------------------------------------------------------- responses


@pytest.mark.parametrize("name", ["response_tool_use.json", "response_thinking_stop_sequence.json"])
def test_responses_become_canonical(name: str) -> None:
    case = fixture(name)
    assert to_canonical_response(case["anthropic"], created=0) == case["canonical"]


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop_reason: str, finish: str) -> None:
    resp = {"id": "msg_1", "model": "m", "content": [], "stop_reason": stop_reason, "usage": {}}
    out = to_canonical_response(resp, 0)
    assert out["choices"][0]["finish_reason"] == finish
    assert out["choices"][0]["message"]["content"] == ""


# ---------------------------------------------------------------- streams


def run_stream(events: list[tuple[str, dict[str, Any]]]) -> tuple[list[dict[str, Any]], StreamTranslator]:
    translator = StreamTranslator("claude", created=0)
    chunks = [chunk for name, data in events for chunk in translator.feed(name, data)]
    return chunks, translator


def test_stream_with_text_and_parallel_tool_calls() -> None:
    chunks, translator = run_stream(sse_events("stream_tool_use.sse"))
    assert translator.done
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "msg_014p7gG3wDgGV9EUtLvnow3U" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Okay, let me check."
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for call in (chunk["choices"] or [{}])[0].get("delta", {}).get("tool_calls", []):
            slot = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
            slot["id"] = call.get("id") or slot["id"]
            slot["name"] = call.get("function", {}).get("name") or slot["name"]
            slot["arguments"] += call["function"].get("arguments", "")
    assert calls == {
        0: {
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "arguments": '{"location": "San Francisco, CA"}',
        },
        1: {"id": "toolu_02T1x1fJ34qAmk2tNTrN7Up7", "name": "get_time", "arguments": "{}"},
    }
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 572,
        "completion_tokens": 89,
        "total_tokens": 661,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_stream_without_message_stop_is_not_done() -> None:
    _, translator = run_stream(sse_events("stream_tool_use.sse")[:-1])
    assert not translator.done


def test_stream_error_event_raises_the_mapped_error() -> None:
    translator = StreamTranslator("claude", created=0)
    with pytest.raises(errors.Unavailable):
        translator.feed("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


def test_stream_thinking_becomes_reasoning_content_with_signature() -> None:
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_t", "usage": {"input_tokens": 3}}}),
        ("content_block_start", {"index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
        (
            "message_delta",
            {"delta": {"stop_reason": "stop_sequence", "stop_sequence": "X"}, "usage": {"output_tokens": 4}},
        ),
        ("message_stop", {}),
    ]
    chunks, _ = run_stream(events)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert {"reasoning_content": "hmm"} in deltas
    assert {"_anthropic": {"signature": "sig"}} in deltas
    assert chunks[-2]["_anthropic"] == {"stop_reason": "stop_sequence", "stop_sequence": "X"}


# ---------------------------------------------------------------- errors


def error(err_type: str, message: str = "boom") -> dict[str, Any]:
    return {"type": "error", "error": {"type": err_type, "message": message}}


@pytest.mark.parametrize(
    ("status", "err_type", "message", "cls", "our_status"),
    [
        (400, "invalid_request_error", "max_tokens: Field required", errors.InvalidRequest, 400),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            errors.ContextLengthExceeded,
            400,
        ),
        (401, "authentication_error", "invalid x-api-key", errors.AuthError, 502),
        (403, "permission_error", "no access", errors.AuthError, 502),
        (404, "not_found_error", "model: claude-nope", errors.UpstreamModelNotFound, 502),
        (404, "not_found_error", "File not found: file_011CNha8iCJcU1wXNR6q4V8w", errors.NotFound, 404),
        (413, "request_too_large", "too big", errors.PayloadTooLarge, 413),
        (429, "rate_limit_error", "slow down", errors.RateLimited, 429),
        (402, "billing_error", "credit balance is too low", errors.QuotaExceeded, 429),
        (500, "api_error", "oops", errors.UpstreamError, 502),
        (529, "overloaded_error", "Overloaded", errors.Unavailable, 503),
        (504, "timeout_error", "timeout", errors.UpstreamTimeout, 504),
    ],
)
def test_error_bodies_map_to_kinds(
    status: int, err_type: str, message: str, cls: type[errors.GatewayError], our_status: int
) -> None:
    body = error(err_type, message)
    err = map_error(status, orjson.dumps(body).decode(), body, {"retry-after": "7"})
    assert type(err) is cls
    assert err.status == our_status
    assert message in err.message
    if cls in (errors.RateLimited, errors.Unavailable):
        assert err.retry_after == 7.0


def test_unreadable_error_bodies_fall_back_to_the_status() -> None:
    assert isinstance(map_error(529, "<html>", None, {}), errors.Unavailable)
    assert isinstance(map_error(502, "<html>", None, {}), errors.UpstreamError)
    assert isinstance(map_error(413, "", None, {}), errors.PayloadTooLarge)


def test_stream_error_events_map_by_type() -> None:
    assert isinstance(map_stream_error(error("rate_limit_error")), errors.RateLimited)
    assert isinstance(map_stream_error(error("api_error")), errors.UpstreamError)
    billing = map_stream_error(error("billing_error"))
    assert isinstance(billing, errors.QuotaExceeded) and not billing.retryable
    assert isinstance(map_stream_error({"type": "error"}), errors.UpstreamError)


def test_private_fields_never_override_what_the_gateway_translated() -> None:
    body = {
        "model": "cheap",
        "messages": [user("hi")],
        "max_tokens": 10,
        "_anthropic": {"model": "claude-opus", "max_tokens": 99999, "messages": [], "stream": True, "top_k": 1},
    }
    req = to_anthropic_request(body, "claude-haiku-4-5")
    assert req["model"] == "claude-haiku-4-5" and req["max_tokens"] == 10
    assert req["messages"] == [{"role": "user", "content": "hi"}] and "stream" not in req
    assert req["top_k"] == 1


def test_server_tools_are_appended_to_the_function_tools() -> None:
    search = {"type": "web_search_20250305", "name": "web_search"}
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = {"model": "x", "messages": [user("hi")], "tools": tools, "_anthropic": {"server_tools": [search]}}
    assert [t["name"] for t in to_anthropic_request(body, "m")["tools"]] == ["f", "web_search"]
    only_server = {
        "model": "x",
        "messages": [user("hi")],
        "_anthropic": {"server_tools": [search], "tool_choice": {"type": "any"}},
    }
    req = to_anthropic_request(only_server, "m")
    assert req["tools"] == [search] and req["tool_choice"] == {"type": "any"}


def test_stream_that_reports_no_usage_ends_without_a_usage_chunk() -> None:
    """Zeros would be charged as a free answer; without a usage chunk the ledger counts the text locally."""
    recorded = sse_events("stream_tool_use.sse")
    events = [(name, {k: v for k, v in data.items() if k != "usage"}) for name, data in recorded]
    events[0] = ("message_start", {"type": "message_start", "message": {"id": "msg_n", "model": "claude"}})
    chunks, translator = run_stream(events)
    assert translator.done and chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert not any("usage" in c for c in chunks)


def test_stream_with_usage_in_message_start_only_ends_without_a_usage_chunk() -> None:
    """message_start's output_tokens is a placeholder (1): a stream whose message_delta gave no count is counted
    locally from the start's input, never billed one output token; the start's input counts still reach the
    ledger."""
    recorded = sse_events("stream_tool_use.sse")
    events = [(name, {k: v for k, v in data.items() if k != "usage"} if name == "message_delta" else data)
              for name, data in recorded]
    chunks, translator = run_stream(events)
    assert translator.done and not any("usage" in c for c in chunks)
    assert chunks[0][PRIVATE_KEY][START_USAGE]["prompt_tokens"] > 0


@pytest.mark.parametrize(("start", "delta"), [
    ({"input_tokens": 40, "cache_read_input_tokens": 60, "output_tokens": 1},  # SGLang: 0s in message_delta
     {"input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 7}),
    ({"input_tokens": 0, "output_tokens": 0},  # older SGLang and others: the input known only at the end
     {"input_tokens": 40, "cache_read_input_tokens": 60, "output_tokens": 7}),
    ({"input_tokens": 40, "cache_read_input_tokens": 60, "output_tokens": 1},  # Anthropic: cumulative, repeated
     {"input_tokens": 40, "cache_read_input_tokens": 60, "output_tokens": 7}),
])
def test_stream_usage_keeps_the_input_counts_whichever_event_carried_them(start: JSON, delta: JSON) -> None:
    """message_delta's counts are cumulative (Anthropic repeats the input ones); a compatible server that sends 0
    there, or in message_start, had its prompt billed as 0 tokens (only cache reads) when 0 came last."""
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_u", "usage": start}}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "hi"}}),
        ("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": delta}),
        ("message_stop", {}),
    ]
    chunks, _ = run_stream(events)
    usage = chunks[-1]["usage"]
    assert (usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]) == (100, 60)
    assert usage["completion_tokens"] == 7


@pytest.mark.parametrize(("speed", "tier"), [("fast", "priority"), ("standard", "default"), (None, "default")])
def test_the_answer_says_which_speed_served_it_as_its_service_tier(speed: str | None, tier: str) -> None:
    """Anthropic's fast mode (``speed: "fast"``) is billed at a multiple of the standard rates, and the usage says
    which speed served the call. The canonical answer carries it as the tier that prices it (OpenAI's name for
    the premium tier, ``priority``, whose alias is ``fast``), plain and streamed: fast-mode calls were billed at
    standard rates, and a call an OpenAI client asked ``priority`` for (which Anthropic does not read) at the
    asked tier."""
    usage: dict[str, Any] = {"input_tokens": 10, "output_tokens": 5}
    if speed is not None:
        usage["speed"] = speed
    resp = {"id": "msg_1", "model": "m", "content": [], "stop_reason": "end_turn", "usage": usage}
    out = to_canonical_response(resp, 0)
    assert out["service_tier"] == tier
    assert out["usage"].get("speed") == speed  # kept for an Anthropic client, as Anthropic sent it
    events = [("message_start", {"type": "message_start", "message": {**resp, "usage": {**usage, "output_tokens": 1}}}),
              ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage}),
              ("message_stop", {"type": "message_stop"})]
    chunks, _ = run_stream(events)
    assert chunks[-1]["usage"] and chunks[-1]["service_tier"] == tier  # the usage chunk, where the router reads it


def test_stream_tool_call_without_input_gets_an_empty_object() -> None:
    """Anthropic streams a call without input as one empty input_json_delta (or none): "{}", never ""."""
    t = StreamTranslator("claude-test-1", 0)
    start = {"index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}}
    assert len(t.feed("content_block_start", start)) == 1
    assert t.feed("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta", "partial_json": ""}}) == []
    stop = t.feed("content_block_stop", {"index": 0})
    assert [c["choices"][0]["delta"] for c in stop] == [{"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}]
    t.feed("content_block_start", {**start, "index": 1})
    t.feed("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a":1}'}})
    assert t.feed("content_block_stop", {"index": 1}) == []  # a call with input is left as it came
