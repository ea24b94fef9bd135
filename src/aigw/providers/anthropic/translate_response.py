"""Anthropic ``message`` -> canonical ``chat.completion``, as pure dict work.

Usage: ``prompt_tokens`` counts every input token (fresh + cache read + cache write),
``prompt_tokens_details.cached_tokens`` the cache reads and ``cache_write_tokens``
the cache writes, so the accountant can price each; ``service_tier`` the speed that served it (fast mode:
``priority``). What finish_reason cannot say
(the exact stop_reason, the matched stop_sequence, signed thinking blocks) goes in
the private ``_anthropic`` key of the response, for an Anthropic client.
"""

from __future__ import annotations

from typing import Any

import orjson

from aigw.types import JSON

FINISH_BY_STOP: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# The stop_reason each finish_reason maps back to; anything else must be carried.
DEFAULT_STOP_BY_FINISH: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def to_canonical_usage(usage: Any) -> JSON:
    """Anthropic usage -> canonical usage; prompt_tokens counts every input token."""
    usage = usage if isinstance(usage, dict) else {}
    fresh = int(usage.get("input_tokens") or 0)
    read = int(usage.get("cache_read_input_tokens") or 0)
    write = int(usage.get("cache_creation_input_tokens") or 0)
    output = int(usage.get("output_tokens") or 0)
    details = usage.get("output_tokens_details")
    reasoning = int(details.get("thinking_tokens") or 0) if isinstance(details, dict) else 0
    prompt = fresh + read + write
    prompt_details = {"cached_tokens": read, "cache_write_tokens": write}
    creation = usage.get("cache_creation")
    if isinstance(creation, dict) and (hour := int(creation.get("ephemeral_1h_input_tokens") or 0)):
        prompt_details["cache_write_1h_tokens"] = hour  # priced apart: 2x input where 5-minute writes are 1.25x
    out: JSON = {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    tools = usage.get("server_tool_use")
    if isinstance(tools, dict) and any(tools.values()):  # web searches are billed per search: kept for the ledger
        out["server_tool_use"] = tools
    for key in ("inference_geo", "speed"):  # where it ran (US-only costs more), how fast (fast mode costs more)
        if isinstance(value := usage.get(key), str) and value:
            out[key] = value
    return out


def _reported(usage: Any) -> bool:
    """Whether an answer's usage has the counts it is billed by (a compatible server may send none, or nulls)."""
    return isinstance(usage, dict) and (usage.get("input_tokens") is not None or usage.get("output_tokens") is not None)


def served_tier(usage: Any) -> str:
    """The tier that prices an answer, by the speed its usage reports: fast mode is billed at a multiple of the
    standard rates (the table's ``priority`` tier, ``fast`` in OpenAI's new name), anything else is ``default``
    (never the tier an OpenAI client asked for: Anthropic does not read ``service_tier``)."""
    return "priority" if isinstance(usage, dict) and usage.get("speed") == "fast" else "default"


def _tool_call(block: JSON) -> JSON:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": arguments},
    }


def to_canonical_response(resp: JSON, created: int) -> JSON:
    """Anthropic ``message`` -> canonical ``chat.completion``."""
    texts: list[str] = []
    thoughts: list[str] = []
    thinking_blocks: list[JSON] = []
    tool_calls: list[JSON] = []
    for block in resp.get("content") or []:
        btype = block.get("type")
        if btype == "text":
            texts.append(block.get("text") or "")
        elif btype == "tool_use":
            tool_calls.append(_tool_call(block))
        elif btype in ("thinking", "redacted_thinking"):
            thinking_blocks.append(block)
            thoughts.append(block.get("thinking") or "")
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    stop_reason = resp.get("stop_reason")
    finish = FINISH_BY_STOP.get(stop_reason or "end_turn", "stop")
    out: JSON = {
        "id": resp.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": resp.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "service_tier": served_tier(resp.get("usage")),
    }
    if _reported(resp.get("usage")):  # else none, not zeros: the ledger counts the answer locally
        out["usage"] = to_canonical_usage(resp.get("usage"))
    private = private_response_fields(stop_reason, resp.get("stop_sequence"), thinking_blocks)
    if private:
        out["_anthropic"] = private
    return out


def private_response_fields(stop_reason: Any, stop_sequence: Any, thinking: list[JSON]) -> JSON:
    """What an Anthropic client needs back that finish_reason cannot say."""
    private: JSON = {}
    finish = FINISH_BY_STOP.get(stop_reason or "end_turn", "stop")
    if stop_reason and DEFAULT_STOP_BY_FINISH.get(finish) != stop_reason:
        private["stop_reason"] = stop_reason
    if stop_sequence:
        private["stop_sequence"] = stop_sequence
    if thinking:
        private["thinking"] = thinking
    return private
