"""Adapter defects found in review: each test fails on the code before its fix."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aigw import errors
from aigw.providers.anthropic.errors import map_error as map_anthropic_error
from aigw.providers.anthropic.translate import to_anthropic_request
from aigw.providers.openai.errors import map_error as map_openai_error
from aigw.providers.openai.translate import shaping_for_model


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def test_anthropic_credit_balance_400_is_the_accounts_quota_not_the_clients_bad_request() -> None:
    # Anthropic sends an exhausted prepaid balance as a 400 invalid_request_error, not a billing_error:
    # the caller did nothing wrong, and another deployment (or the fallback chain) may still answer.
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": (
        "Your credit balance is too low to access the Anthropic API. "
        "Please go to Plans & Billing to upgrade or purchase credits.")}}
    err = map_anthropic_error(400, orjson.dumps(body).decode(), body, {})
    assert isinstance(err, errors.QuotaExceeded)
    assert err.code == "upstream_billing"


@pytest.mark.parametrize(("stop", "sent"), [
    (["\n"], None),
    ("\n\n", None),
    (["\n", "END", " "], ["END"]),
    ([" \t", ""], None),
    (["Human:"], ["Human:"]),
])
def test_anthropic_whitespace_only_stop_sequences_are_not_sent(stop: Any, sent: list[str] | None) -> None:
    # Anthropic answers 400 "each stop sequence must contain non-whitespace" to stop=["\n"], a common
    # OpenAI-client setting; the rest of the list is kept.
    req = to_anthropic_request({"model": "x", "messages": [_user("hi")], "stop": stop}, "claude-test")
    assert req.get("stop_sequences") == sent


def test_error_body_wrapped_in_a_list_is_read_by_its_status() -> None:
    # Google's APIs (Gemini's OpenAI-compatible endpoint among them) wrap the error object in a list.
    body = [{"error": {"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT"}}]
    err = map_openai_error(400, orjson.dumps(body).decode(), body, {})
    assert isinstance(err, errors.InvalidRequest)  # the client's request: not a retried 502
    assert "invalid argument" in err.message


def test_fine_tuned_reasoning_models_get_max_completion_tokens() -> None:
    assert shaping_for_model("ft:o4-mini-2025-04-16:acme::abc123").max_tokens_field == "max_completion_tokens"
    assert shaping_for_model("ft:gpt-4o-mini-2024-07-18:acme::x").max_tokens_field is None


def _tool_chunk(calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gemini-2.5-flash",
            "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": calls}, "finish_reason": None}]}


def test_tool_call_deltas_without_index_get_one_per_call() -> None:
    # Gemini's OpenAI-compatible endpoint streams tool calls without ``index``; the OpenAI SDKs refuse such
    # deltas, and everything downstream that accumulates by index (default 0) glued parallel calls together.
    from aigw.providers.openai.translate import UsageMover

    mover = UsageMover()
    chunks = [
        _tool_chunk([{"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": ""}}]),
        _tool_chunk([{"function": {"arguments": "{\"city\": \"Oslo\"}"}}]),
        _tool_chunk([{"id": "call_b", "type": "function", "function": {"name": "time", "arguments": "{}"}}]),
        _tool_chunk([{"id": "call_a", "function": {"arguments": ""}}]),
        _tool_chunk([{"index": 0, "id": "call_x", "function": {"name": "f", "arguments": ""}}]),
    ]
    seen = [mover.see(c) for c in chunks]
    indexes = [call["index"] for out in seen if out for call in out["choices"][0]["delta"]["tool_calls"]]
    assert indexes == [0, 0, 1, 0, 0]  # one index per call id; a fragment without id continues the last call
