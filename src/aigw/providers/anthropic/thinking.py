"""OpenAI's ``reasoning_effort`` -> Anthropic extended thinking, as pure dict work.

An OpenAI client asks for reasoning with one word; Anthropic wants
``thinking: {type: enabled, budget_tokens: N}`` with ``max_tokens > N`` (the budget
counts toward it, as reasoning counts toward OpenAI's ``max_completion_tokens``) and
no temperature but 1. The thinking comes back as ``reasoning_content`` (the field
OpenAI-compatible servers use; the OpenAI SDKs keep it as an extra field).

Choices worth knowing:

* The budget per effort is ``EFFORT_BUDGET``. Without a client max, ``max_tokens``
  becomes budget + the usual default, so the answer keeps its room; with one, the
  budget shrinks to fit under it, and below Anthropic's minimum (1024) there is no
  thinking at all rather than a refused request (OpenAI accepts such a pair too).
* ``minimal`` and ``none`` mean no thinking.
* Which models think is known by name: the Claude 3 models before 3.7 (and older)
  do not, and get OpenAI's own 400 for a model without reasoning; any other name,
  including names not known here, is taken to think.
* Anthropic refuses thinking when the last assistant turn called tools without its
  signed thinking block in front (an OpenAI client cannot send one back): such a
  turn is sent without thinking, so an agent loop keeps working.
"""

from __future__ import annotations

from typing import Any

from aigw.errors import InvalidRequest
from aigw.types import JSON

EFFORT_BUDGET = {"low": 1024, "medium": 4096, "high": 16384}
NO_THINKING_EFFORTS = frozenset({"minimal", "none"})
MIN_BUDGET = 1024  # Anthropic's floor for budget_tokens
# Anthropic models without extended thinking (it came with Claude 3.7 Sonnet)
_NO_THINKING_PREFIXES = ("claude-3-5", "claude-3-haiku", "claude-3-opus", "claude-3-sonnet", "claude-2",
                         "claude-instant")
_THINKING_BLOCKS = ("thinking", "redacted_thinking")


def supports_thinking(model: str) -> bool:
    """Whether an upstream Anthropic model id can think (``anthropic.`` / ``us.anthropic.`` prefixes allowed)."""
    name = model.rsplit(".", 1)[-1] if model.startswith(("anthropic.", "us.", "eu.", "apac.")) else model
    return not name.startswith(_NO_THINKING_PREFIXES)


def _unsigned_tool_turn(turns: list[JSON]) -> bool:
    """The last assistant turn called tools and does not start with a thinking block."""
    for turn in reversed(turns):
        if turn.get("role") != "assistant":
            continue
        content = turn.get("content")
        if not isinstance(content, list):
            return False
        calls = any(isinstance(b, dict) and b.get("type") == "tool_use" for b in content)
        first = content[0] if content and isinstance(content[0], dict) else {}
        return calls and first.get("type") not in _THINKING_BLOCKS
    return False


def apply_reasoning_effort(req: JSON, body: JSON, default_max_tokens: int) -> None:
    """Set ``thinking`` (and, when the client set no max, ``max_tokens``) on an Anthropic request."""
    effort: Any = body.get("reasoning_effort")
    if effort is None:
        return
    if effort not in EFFORT_BUDGET and effort not in NO_THINKING_EFFORTS:
        raise InvalidRequest(f"Invalid value: {effort!r}. Supported values are: 'none', 'minimal', 'low', "
                             "'medium', and 'high'.", param="reasoning_effort")
    if not supports_thinking(str(req.get("model") or "")):
        raise InvalidRequest("Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                             param="reasoning_effort")
    budget = EFFORT_BUDGET.get(effort)
    if budget is None or _unsigned_tool_turn(req.get("messages") or []):
        return
    temperature = req.get("temperature")
    if temperature is not None and temperature != 1:
        raise InvalidRequest(f"Unsupported value: 'temperature' does not support {body.get('temperature')} with "
                             "reasoning_effort on this model. Only the default (1) value is supported.",
                             param="temperature")
    if body.get("max_completion_tokens") or body.get("max_tokens"):
        budget = min(budget, int(req["max_tokens"]) - 1)
        if budget < MIN_BUDGET:
            return
    else:
        req["max_tokens"] = budget + default_max_tokens
    req["thinking"] = {"type": "enabled", "budget_tokens": budget}
