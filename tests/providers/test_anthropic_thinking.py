"""``reasoning_effort`` -> Anthropic thinking: the ``max_tokens`` a budget reserves is the one the adapter sends,
and an effort of the wrong type is a 400 naming the field (no network)."""

from __future__ import annotations

from typing import Any

import pytest

from aigw import errors
from aigw.providers.anthropic.thinking import sent_max_tokens, thinks
from aigw.providers.anthropic.translate import to_anthropic_request

ASK = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.mark.parametrize("effort", [None, "none", "minimal", "low", "medium", "high"])
@pytest.mark.parametrize("limit", [{}, {"max_tokens": 3000}, {"max_completion_tokens": 900},
                                   {"max_completion_tokens": 5000, "max_tokens": 200}])
def test_sent_max_tokens_is_what_the_adapter_sends(effort: str | None, limit: dict[str, int]) -> None:
    body: dict[str, Any] = {"model": "claude", "messages": ASK, **limit}
    if effort is not None:
        body["reasoning_effort"] = effort
    assert sent_max_tokens(body) == to_anthropic_request(body, "claude-sonnet-4-5")["max_tokens"]


@pytest.mark.parametrize(("effort", "sent"), [("low", 1024 + 4096), ("medium", 4096 + 4096),
                                              ("high", 16384 + 4096), ("minimal", 4096)])
def test_without_a_max_thinking_raises_max_tokens_by_its_budget(effort: str, sent: int) -> None:
    assert sent_max_tokens({"messages": ASK, "reasoning_effort": effort}) == sent


def test_a_turn_after_an_unsigned_tool_call_sends_less_than_sent_max_tokens_says() -> None:
    # such a turn goes without thinking: sent_max_tokens is the most, never less than what is sent
    body: dict[str, Any] = {"model": "claude", "reasoning_effort": "high", "messages": [
        *ASK, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "ok"}]}
    sent = to_anthropic_request(body, "claude-sonnet-4-5")
    assert "thinking" not in sent and sent["max_tokens"] == 4096 < sent_max_tokens(body)


@pytest.mark.parametrize("effort", [["high"], {"level": "high"}, 3, 1.5, True, "extreme"])
def test_an_effort_openai_does_not_take_is_a_400_naming_it(effort: object) -> None:
    # a list or an object was a TypeError (unhashable) in the effort look-up: a 500
    with pytest.raises(errors.InvalidRequest) as info:
        to_anthropic_request({"model": "claude", "messages": ASK, "reasoning_effort": effort}, "claude-sonnet-4-5")
    assert info.value.status == 400 and info.value.param == "reasoning_effort"
    assert sent_max_tokens({"messages": ASK, "reasoning_effort": effort}) == 4096  # never raises


@pytest.mark.parametrize(("provider", "model", "expected"), [
    ("anthropic", "claude-sonnet-4-5", True), ("anthropic", "claude-3-7-sonnet-20250219", True),
    ("anthropic", "claude-3-5-haiku-20241022", False), ("openai", "o3", False), ("mock", "claude-sonnet-4-5", False),
])
def test_only_anthropic_deployments_of_models_that_think_raise_max_tokens(provider: str, model: str,
                                                                          expected: bool) -> None:
    assert thinks(provider, model) is expected


def test_another_providers_reasoning_is_not_sent_back_as_an_anthropic_thinking_block() -> None:
    # the gateway shows an OpenAI-shaped upstream's reasoning as a thinking block with an empty signature; sent
    # to Anthropic after a fallback or a model switch, it was its 400 "Invalid `signature` in `thinking` block"
    theirs = {"type": "thinking", "thinking": "Rayleigh scattering.", "signature": ""}
    signed = {"type": "thinking", "thinking": "Scattering.", "signature": "sig_1"}
    redacted = {"type": "redacted_thinking", "data": "abc"}
    blocks = [theirs, signed, redacted]
    answer = {"role": "assistant", "content": "Short waves scatter.", "_anthropic": {"thinking": blocks}}
    body = {"model": "claude", "messages": [*ASK, answer, {"role": "user", "content": "More?"}]}
    sent = to_anthropic_request(body, "claude-sonnet-4-5")["messages"][1]["content"]
    assert sent == [signed, redacted, {"type": "text", "text": "Short waves scatter."}]
