"""Inbound Anthropic Messages API: validation, conversion to canonical and back, error rendering."""

from __future__ import annotations

import copy
from typing import Any

import anthropic
import orjson
import pytest

from aigw import errors
from aigw.providers.anthropic.translate import to_anthropic_request
from aigw.providers.anthropic.translate_response import to_canonical_usage
from aigw.schema.anthropic import (
    canonical_to_message,
    keep_beta,
    messages_request_to_canonical,
    render_error,
    strip_private,
)
from tests.unit.schema.anthropic_sdk import sdk_error, sdk_message

CC = {"type": "ephemeral"}
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}

# A request using everything the converter maps; it must survive Anthropic -> canonical -> Anthropic.
FULL: dict[str, Any] = {
    "model": "claude",
    "max_tokens": 3000,
    "system": [{"type": "text", "text": "You are terse.", "cache_control": CC}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris? See the map."},
                {"type": "image", "source": PNG},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/map.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Need the tool.", "signature": "sig_1"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "15 C"},
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": "boom", "is_error": True},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ],
    "tools": [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "get_time", "input_schema": {"type": "object"}, "cache_control": CC},
    ],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "stop_sequences": ["END"],
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 20,
    "metadata": {"user_id": "u-1"},
    "thinking": {"type": "enabled", "budget_tokens": 2048},
    "output_config": {"effort": "low", "format": {"type": "json_schema", "schema": {
        "type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}}},
}


def request(**extra: Any) -> dict[str, Any]:
    return {"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **extra}


# ---------------------------------------------------------------- requests


def test_full_request_converts_to_canonical() -> None:
    out = messages_request_to_canonical(copy.deepcopy(FULL), beta="tools-2024, files-2025")
    assert out["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "You are terse.", "cache_control": CC}],
    }
    assert out["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
    }
    assistant = out["messages"][2]
    assert assistant["content"] == "Checking."
    assert assistant["tool_calls"][0] == {
        "id": "toolu_01",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    assert assistant["_anthropic"] == {"thinking": [FULL["messages"][1]["content"][0]]}
    assert out["messages"][3:] == [
        {"role": "tool", "tool_call_id": "toolu_01", "content": "15 C"},
        {"role": "tool", "tool_call_id": "toolu_02", "content": "boom", "_anthropic": {"is_error": True}},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert out["tools"][1] == {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object"}},
        "cache_control": CC,
    }
    assert out["tool_choice"] == "required" and out["parallel_tool_calls"] is False
    assert out["stop"] == ["END"] and out["user"] == "u-1" and out["max_tokens"] == 3000
    assert out["response_format"]["json_schema"]["schema"] == FULL["output_config"]["format"]["schema"]
    assert out["_anthropic"] == {
        "top_k": 20,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "output_config": {"effort": "low"},
        "anthropic_beta": ["tools-2024", "files-2025"],
    }
    assert "stream" not in out


def test_beta_flags_are_kept_in_order_once_each() -> None:
    out = messages_request_to_canonical(request(), beta=" files-2025 ,tools-2024,,files-2025")
    assert out["_anthropic"]["anthropic_beta"] == ["files-2025", "tools-2024"]
    assert "_anthropic" not in messages_request_to_canonical(request(), beta=" , ")


def test_keep_beta_puts_the_header_where_only_an_anthropic_upstream_reads_it() -> None:
    body: dict[str, Any] = {"model": "m", "messages": []}
    keep_beta(body, "tools-2024, files-2025")
    assert body["_anthropic"] == {"anthropic_beta": ["tools-2024", "files-2025"]}
    keep_beta(body, "")
    assert body["_anthropic"] == {"anthropic_beta": ["tools-2024", "files-2025"]}
    assert strip_private(body) == {"model": "m", "messages": []}


def test_round_trip_through_the_anthropic_adapter_is_lossless() -> None:
    canonical = messages_request_to_canonical(copy.deepcopy(FULL))
    back = to_anthropic_request(canonical, "claude")
    assert back == FULL


def test_stream_flag_asks_for_usage() -> None:
    out = messages_request_to_canonical(request(stream=True))
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "any"}, "required"),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    assert messages_request_to_canonical(request(tools=tools, tool_choice=choice))["tool_choice"] == expected


def test_server_tools_are_kept_for_an_anthropic_upstream() -> None:
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    out = messages_request_to_canonical(request(tools=[search]))
    assert "tools" not in out and out["_anthropic"]["server_tools"] == [search]


def test_images_inside_tool_results_follow_as_a_user_message() -> None:
    body = request(
        messages=[
            {"role": "user", "content": "draw"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [{"type": "text", "text": "ok"}, {"type": "image", "source": PNG}],
                    }
                ],
            },
        ]
    )
    out = messages_request_to_canonical(body)["messages"]
    assert out[2] == {"role": "tool", "tool_call_id": "t", "content": "ok"}
    assert out[3]["role"] == "user" and out[3]["content"][0]["type"] == "image_url"


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ([], None, "JSON object"),
        ({"max_tokens": 10, "messages": []}, "model", "model"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens", "max_tokens: Field required"),
        (request(max_tokens="10"), "max_tokens", "integer"),
        (request(max_tokens=0), "max_tokens", "at least 1"),
        (request(messages=[]), "messages", "at least one message"),
        (request(messages="hi"), "messages", "messages"),
        (request(messages=[{"role": "system", "content": "x"}]), "messages.0.role", "'user' or 'assistant'"),
        (request(messages=[{"role": "user", "content": 5}]), "messages.0.content", "string or list"),
        (request(messages=[{"role": "user", "content": [{"type": "video"}]}]), "messages.0.content.0.type", "one of"),
        (request(messages=[{"role": "user", "content": [{"type": ["text"]}]}]), "messages.0.content.0.type", "one of"),
        (request(messages=[{"role": "user", "content": [{"type": {"a": 1}}]}]), "messages.0.content.0.type", "one of"),
        (
            request(messages=[{"role": "assistant", "content": [{"type": ["text"]}]}]),
            "messages.0.content.0.type",
            "one of",
        ),
        (
            request(messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}]),
            "messages.0.content.0.text",
            "string",
        ),
        (
            request(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "path"}}]}]),
            "messages.0.content.0.source",
            "'base64', 'url' or 'file'",
        ),
        (  # a file of Anthropic's Files API is an image source too, but names its file
            request(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]),
            "messages.0.content.0.source.file_id",
            "Field required",
        ),
        (
            request(
                messages=[
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "x"}]}
                ]
            ),
            "messages.0.content.0.input",
            "object",
        ),
        (request(temperature=1.5), "temperature", "between 0 and 1"),
        (request(stop_sequences="END"), "stop_sequences", "list of strings"),
        (request(stream="yes"), "stream", "boolean"),
        (request(tools=[{"name": "f"}]), "tools.0.input_schema", "Field required"),
        (request(tool_choice={"type": "maybe"}), "tool_choice", "'auto', 'any', 'tool' or 'none'"),
        (request(tool_choice={"type": "tool"}), "tool_choice.name", "Field required"),
        (request(system=[{"type": "image"}]), "system.0", "text block"),
        (request(top_k="5"), "top_k", "non-negative integer"),
        (request(top_k=-1), "top_k", "non-negative integer"),
        (request(thinking=True), "thinking.type", "object with a type"),
        (request(thinking={"budget_tokens": 1024}), "thinking.type", "object with a type"),
        (request(service_tier=["auto"]), "service_tier", "string"),
        (request(container=5), "container", "string or an object"),
        (request(metadata={"user_id": 42}), "metadata.user_id", "string"),
    ],
)
def test_invalid_requests_name_the_field(body: Any, param: str | None, fragment: str) -> None:
    with pytest.raises(errors.InvalidRequest) as info:
        messages_request_to_canonical(body)
    assert info.value.param == param
    assert fragment in info.value.message
    assert info.value.status == 400


# ---------------------------------------------------------------- responses


def completion(message: dict[str, Any], finish: str = "stop", **extra: Any) -> dict[str, Any]:
    usage = {
        "prompt_tokens": 120,
        "completion_tokens": 7,
        "total_tokens": 127,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 15},
    }
    return {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
        **extra,
    }


def test_text_completion_becomes_a_message() -> None:
    msg = canonical_to_message(completion({"role": "assistant", "content": "Hello!"}), "claude")
    assert msg == {
        "id": "msg_chatcmplabc123",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 5,
            "output_tokens": 7,
            "cache_creation_input_tokens": 15,
            "cache_read_input_tokens": 100,
            "cache_creation": {"ephemeral_5m_input_tokens": 15, "ephemeral_1h_input_tokens": 0},
        },
    }


@pytest.mark.parametrize(("upstream", "split"), [
    ({"cache_creation_input_tokens": 1500,
      "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1000}}, (500, 1000)),
    ({"cache_creation_input_tokens": 1500}, (1500, 0)),  # an upstream that sends no split: all 5-minute writes
])
def test_cache_writes_reach_the_client_split_by_ttl_as_anthropic_sends_them(
        upstream: dict[str, Any], split: tuple[int, int]) -> None:
    """Anthropic usage -> canonical -> Anthropic usage keeps the 5-minute / 1-hour split of cache writes."""
    usage = to_canonical_usage({"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 100, **upstream})
    msg = sdk_message(canonical_to_message({**completion({"role": "assistant", "content": "Hi"}), "usage": usage},
                                           "claude"))
    assert msg.usage.cache_creation_input_tokens == 1500 and msg.usage.input_tokens == 10
    assert msg.usage.cache_creation is not None
    assert (msg.usage.cache_creation.ephemeral_5m_input_tokens, msg.usage.cache_creation.ephemeral_1h_input_tokens) \
        == split


def test_without_cache_writes_the_usage_has_no_cache_creation() -> None:
    """No writes: the usage is what it always was (Anthropic's four counts), nothing added."""
    usage = to_canonical_usage({"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 100})
    msg = canonical_to_message({**completion({"role": "assistant", "content": "Hi"}), "usage": usage}, "claude")
    assert msg["usage"] == {"input_tokens": 10, "output_tokens": 7, "cache_creation_input_tokens": 0,
                            "cache_read_input_tokens": 100}


def test_tool_calls_become_tool_use_blocks_with_parsed_input() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
            {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "not json"}},
        ],
    }
    msg = canonical_to_message(completion(message, "tool_calls"), "claude")
    assert msg["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
        {"type": "tool_use", "id": "call_2", "name": "g", "input": {"_raw_arguments": "not json"}},
    ]
    assert msg["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish", "private", "stop_reason"),
    [
        ("length", None, "max_tokens"),
        ("content_filter", None, "refusal"),
        (None, None, "end_turn"),
        ("stop", {"stop_reason": "stop_sequence", "stop_sequence": "END"}, "stop_sequence"),
        ("stop", {"stop_reason": "pause_turn"}, "pause_turn"),
    ],
)
def test_stop_reasons(finish: Any, private: Any, stop_reason: str) -> None:
    extra = {"_anthropic": private} if private else {}
    msg = canonical_to_message(completion({"role": "assistant", "content": "x"}, finish, **extra), "claude")
    assert msg["stop_reason"] == stop_reason
    assert msg["stop_sequence"] == (private or {}).get("stop_sequence")


def test_a_stop_string_a_compatible_server_names_is_the_stop_sequence() -> None:
    # vLLM's choice carries the stop string it matched; an EOS (None) or a stop token id (an int) is an end_turn
    done = completion({"role": "assistant", "content": "x"}, "stop")
    done["choices"][0]["stop_reason"] = "END"
    msg = canonical_to_message(done, "claude")
    assert (msg["stop_reason"], msg["stop_sequence"]) == ("stop_sequence", "END")
    for other in (None, 128001):
        done["choices"][0]["stop_reason"] = other
        msg = canonical_to_message(done, "claude")
        assert (msg["stop_reason"], msg["stop_sequence"]) == ("end_turn", None)


def test_thinking_comes_first() -> None:
    thinking = [{"type": "thinking", "thinking": "hmm", "signature": "s"}]
    msg = canonical_to_message(
        completion({"role": "assistant", "content": "ok"}, _anthropic={"thinking": thinking}), "c"
    )
    assert [b["type"] for b in msg["content"]] == ["thinking", "text"]
    msg = canonical_to_message(completion({"role": "assistant", "content": "ok", "reasoning_content": "r"}), "c")
    assert msg["content"][0] == {"type": "thinking", "thinking": "r", "signature": ""}


def test_the_sdk_parses_our_message() -> None:
    message = {
        "role": "assistant",
        "content": "Sure.",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"q": "x"}'}}],
    }
    parsed = sdk_message(canonical_to_message(completion(message, "tool_calls"), "claude"))
    assert isinstance(parsed, anthropic.types.Message)
    assert parsed.content[0].text == "Sure."  # type: ignore[union-attr]
    assert parsed.content[1].input == {"q": "x"}  # type: ignore[union-attr]
    assert parsed.stop_reason == "tool_use" and parsed.usage.cache_read_input_tokens == 100


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("err", "status", "err_type", "sdk_class"),
    [
        (errors.InvalidRequest("bad"), 400, "invalid_request_error", anthropic.BadRequestError),
        (errors.ContextLengthExceeded("prompt is too long"), 400, "invalid_request_error", anthropic.BadRequestError),
        (errors.ContentPolicy("no"), 400, "invalid_request_error", anthropic.BadRequestError),
        (errors.GuardrailBlocked("pii"), 400, "invalid_request_error", anthropic.BadRequestError),
        (errors.AuthError("key"), 401, "authentication_error", anthropic.AuthenticationError),
        (errors.PermissionDenied("model"), 403, "permission_error", anthropic.PermissionDeniedError),
        (errors.NotFound("model"), 404, "not_found_error", anthropic.NotFoundError),
        (errors.PayloadTooLarge("big"), 413, "request_too_large", anthropic.APIStatusError),
        (errors.RateLimited("slow", retry_after=3), 429, "rate_limit_error", anthropic.RateLimitError),
        (errors.BudgetExceeded("broke"), 429, "rate_limit_error", anthropic.RateLimitError),
        (errors.BudgetExceeded("broke", status=402), 402, "billing_error", anthropic.APIStatusError),
        (errors.QuotaExceeded("out of credit", status=402), 402, "billing_error", anthropic.APIStatusError),
        (errors.QuotaExceeded("no quota", code="insufficient_quota"), 429, "rate_limit_error",
         anthropic.RateLimitError),
        (errors.Unavailable("busy"), 529, "overloaded_error", anthropic.InternalServerError),
        (errors.UpstreamTimeout("slow"), 504, "timeout_error", anthropic.InternalServerError),
        (errors.UpstreamError("bad"), 502, "api_error", anthropic.InternalServerError),
        (
            errors.AuthError("upstream key", status=502, code="upstream_auth"),
            502,
            "api_error",
            anthropic.InternalServerError,
        ),
    ],
)
def test_render_error(err: errors.GatewayError, status: int, err_type: str, sdk_class: type) -> None:
    got_status, body = render_error(err, request_id="req_1")
    assert got_status == status
    assert body == {"type": "error", "error": {"type": err_type, "message": err.message}, "request_id": "req_1"}
    exc = sdk_error(got_status, body)
    assert isinstance(exc, sdk_class) and exc.status_code == status
    assert orjson.loads(exc.response.content)["error"]["type"] == err_type


def test_server_tools_only_keep_tool_choice_private() -> None:
    search = {"type": "web_search_20250305", "name": "web_search"}
    out = messages_request_to_canonical(request(tools=[search], tool_choice={"type": "any"}))
    assert "tool_choice" not in out and "tools" not in out
    assert out["_anthropic"] == {"server_tools": [search], "tool_choice": {"type": "any"}}
    back = to_anthropic_request(out, "claude")
    assert back["tools"] == [search] and back["tool_choice"] == {"type": "any"}


def test_strip_private_removes_every_extension_without_touching_the_input() -> None:
    canonical = messages_request_to_canonical(copy.deepcopy(FULL))
    snapshot = copy.deepcopy(canonical)
    clean = strip_private(canonical)
    assert canonical == snapshot  # a retry may still send the original to Anthropic
    text = orjson.dumps(clean).decode()
    assert "_anthropic" not in text and "cache_control" not in text
    assert clean["messages"][2]["tool_calls"] == canonical["messages"][2]["tool_calls"]
    assert clean["tools"][1] == {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    plain = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert strip_private(plain) is plain


def test_strip_private_on_responses_and_chunks() -> None:
    resp = completion({"role": "assistant", "content": "x"}, _anthropic={"stop_reason": "pause_turn"})
    assert "_anthropic" not in strip_private(resp) and resp["_anthropic"]
    chunk = {"choices": [{"index": 0, "delta": {"_anthropic": {"signature": "s"}}}], "_anthropic": {"x": 1}}
    assert strip_private(chunk) == {"choices": [{"index": 0, "delta": {}}]}


@pytest.mark.parametrize("usage", [
    # DeepSeek: cache hits named prompt_cache_hit_tokens (inside prompt_tokens), no prompt_tokens_details
    {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100, "prompt_cache_hit_tokens": 800,
     "prompt_cache_miss_tokens": 200},
    # Gemini's OpenAI-compatible API: thinking outside completion_tokens, counted in total_tokens only
    {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 1150},
    # xAI: the same, with the thinking named and cache reads inside prompt_tokens
    {"prompt_tokens": 40, "completion_tokens": 50, "total_tokens": 390, "prompt_tokens_details": {"cached_tokens": 30},
     "completion_tokens_details": {"reasoning_tokens": 300}},
    # OpenAI: cached inside prompt_tokens, reasoning inside completion_tokens
    {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
     "prompt_tokens_details": {"cached_tokens": 600}, "completion_tokens_details": {"reasoning_tokens": 50}},
])
def test_an_anthropic_client_sees_the_counts_it_is_billed_for(usage: dict[str, Any]) -> None:
    """An Anthropic client served by an OpenAI-compatible upstream reads the tokens the ledger bills: cache reads
    in ``cache_read_input_tokens`` (not in ``input_tokens``), thinking in ``output_tokens``. DeepSeek's cache
    hits came back as fresh input and Gemini's or xAI's thinking was left out of ``output_tokens``."""
    from aigw.accounting.usage import tokens_from_usage

    billed = tokens_from_usage(usage)
    assert billed is not None
    msg = sdk_message(canonical_to_message({**completion({"role": "assistant", "content": "Hi"}), "usage": usage},
                                           "claude"))
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.cache_creation_input_tokens,
            msg.usage.output_tokens) == (billed.fresh_input, billed.cached_input, billed.cache_write,
                                         billed.completion)


def test_an_anthropic_client_reads_where_its_call_ran() -> None:
    """``usage.inference_geo`` (Anthropic's word on where inference ran, US-only billed at 1.1x) reaches an
    Anthropic client through the canonical answer, as Anthropic sends it; it was dropped."""
    usage = to_canonical_usage({"input_tokens": 10, "output_tokens": 7, "inference_geo": "us"})
    msg = sdk_message(canonical_to_message({**completion({"role": "assistant", "content": "Hi"}), "usage": usage},
                                           "claude"))
    assert msg.usage.inference_geo == "us"


def test_an_anthropic_client_reads_the_speed_that_served_it() -> None:
    """``usage.speed`` (``fast`` or ``standard``: fast mode is billed at a multiple) reaches an Anthropic client."""
    usage = to_canonical_usage({"input_tokens": 10, "output_tokens": 7, "speed": "fast"})
    msg = sdk_message(canonical_to_message({**completion({"role": "assistant", "content": "Hi"}), "usage": usage},
                                           "claude"))
    assert msg.usage.speed == "fast"


def test_strict_tools_keep_strict_where_each_upstream_can_hold_it() -> None:
    """A strict tool with an optional property: not strict for OpenAI-style upstreams (their strict mode wants every
    property required), still strict for an Anthropic upstream; a schema OpenAI's strict mode holds stays strict."""
    optional = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}
    held = {**optional, "required": ["a"]}
    body = request(tools=[{"name": "o", "strict": True, "input_schema": optional},
                          {"name": "h", "strict": True, "input_schema": held}])
    canonical = messages_request_to_canonical(body)
    assert [t["function"]["strict"] for t in canonical["tools"]] == [False, True]
    assert [t["function"]["strict"] for t in strip_private(canonical)["tools"]] == [False, True]
    assert "_anthropic" not in str(strip_private(canonical)["tools"])
    assert [t["strict"] for t in to_anthropic_request(canonical, "claude")["tools"]] == [True, True]


def test_tool_fields_only_anthropic_reads_reach_an_anthropic_upstream() -> None:
    """A client tool's fields beyond name, description, input_schema, strict and cache_control (input_examples,
    defer_loading for tool search, allowed_callers for programmatic calls, type custom) were dropped on the way
    to an Anthropic upstream: the tool arrived without them. They ride in ``_anthropic``; others never see them."""
    tool = {"type": "custom", "name": "f", "input_schema": {"type": "object"}, "defer_loading": True,
            "input_examples": [{"a": 1}], "allowed_callers": ["code_execution_20250825"]}
    canonical = messages_request_to_canonical(request(tools=[tool]))
    assert to_anthropic_request(canonical, "claude")["tools"] == [tool]
    assert strip_private(canonical)["tools"] == [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object"}}}]
