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
  ``sent_max_tokens`` says what ``max_tokens`` that makes, so a budget can reserve it.
* ``minimal`` and ``none`` mean no thinking; any other value, or one that is not a
  string, is OpenAI's 400 (a list or an object was a 500, unhashable in a dict look-up).
* Which models think is known by name: the Claude 3 models before 3.7 (and older)
  do not, and get OpenAI's own 400 for a model without reasoning; any other name,
  including names not known here, is taken to think.
* Anthropic refuses thinking when the last assistant turn called tools without its
  signed thinking block in front (an OpenAI client cannot send one back): such a
  turn is sent without thinking, so an agent loop keeps working. So is a request
  whose ``tool_choice`` forces a call (``required``, a named function), which
  Anthropic refuses beside thinking and OpenAI's reasoning models take.
"""

from __future__ import annotations

from typing import Any

from aigw.errors import InvalidRequest
from aigw.types import JSON

DEFAULT_MAX_TOKENS = 4096  # the adapter's max_tokens when the client sets none (Anthropic requires one)
EFFORT_BUDGET = {"low": 1024, "medium": 4096, "high": 16384}
NO_THINKING_EFFORTS = frozenset({"minimal", "none"})
MIN_BUDGET = 1024  # Anthropic's floor for budget_tokens
# Anthropic models without extended thinking (it came with Claude 3.7 Sonnet)
_NO_THINKING_PREFIXES = ("claude-3-5", "claude-3-haiku", "claude-3-opus", "claude-3-sonnet", "claude-2",
                         "claude-instant")
_THINKING_BLOCKS = ("thinking", "redacted_thinking")
# provider kinds whose adapter sends a chat body through ``apply_reasoning_effort`` (a Bedrock adapter for
# Claude would join them if it reused this translation)
THINKING_PROVIDERS = frozenset({"anthropic"})


def supports_thinking(model: str) -> bool:
    """Whether an upstream Anthropic model id can think (``anthropic.`` / ``us.anthropic.`` prefixes allowed)."""
    name = model.rsplit(".", 1)[-1] if model.startswith(("anthropic.", "us.", "eu.", "apac.")) else model
    return not name.startswith(_NO_THINKING_PREFIXES)


def thinks(provider: str, model: str) -> bool:
    """Whether a deployment (provider kind, upstream model) turns ``reasoning_effort`` into thinking."""
    return provider in THINKING_PROVIDERS and supports_thinking(model)


def sent_max_tokens(body: JSON, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> int:
    """The most ``max_tokens`` the adapter sends for ``body`` to a model that thinks: the client's max, else
    the default with the effort's thinking budget on top (20,480 for ``high``). The most: a turn after an
    unsigned tool call is sent without thinking, at the default. Pure, and never raises (a budget reads it)."""
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
        return asked
    effort = body.get("reasoning_effort")
    return default_max_tokens + (EFFORT_BUDGET.get(effort, 0) if isinstance(effort, str) else 0)


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


def _forces_tool(req: JSON) -> bool:
    """tool_choice forces a call (OpenAI's ``required`` or a named function), which Anthropic refuses beside
    thinking ("Thinking may not be enabled when tool_choice forces tool use")."""
    choice = req.get("tool_choice")
    return isinstance(choice, dict) and choice.get("type") in ("any", "tool")


def apply_reasoning_effort(req: JSON, body: JSON, default_max_tokens: int) -> None:
    """Set ``thinking`` (and, when the client set no max, ``max_tokens``) on an Anthropic request."""
    effort: Any = body.get("reasoning_effort")
    if effort is None:
        return
    if not isinstance(effort, str) or (effort not in EFFORT_BUDGET and effort not in NO_THINKING_EFFORTS):
        raise InvalidRequest(f"Invalid value: {effort!r}. Supported values are: 'none', 'minimal', 'low', "
                             "'medium', and 'high'.", param="reasoning_effort")
    if not supports_thinking(str(req.get("model") or "")):
        raise InvalidRequest("Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                             param="reasoning_effort")
    budget = EFFORT_BUDGET.get(effort)
    if budget is None or _unsigned_tool_turn(req.get("messages") or []) or _forces_tool(req):
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
        req["max_tokens"] = sent_max_tokens(body, default_max_tokens)  # budget + default: what a budget reserves
    req["thinking"] = {"type": "enabled", "budget_tokens": budget}
