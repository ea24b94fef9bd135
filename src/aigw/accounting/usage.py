"""Token counts by kind, read from whichever usage shape a provider reported.

Providers disagree on what "input tokens" means, which is where peers misprice:

    shape                          input total includes cache?   reasoning
    OpenAI chat (canonical)        prompt_tokens: yes (cached_tokens inside)   inside completion_tokens
    OpenAI Responses               input_tokens: yes                            inside output_tokens
    Anthropic Messages             input_tokens: NO (cache read/creation apart) inside output_tokens
    Gemini                         promptTokenCount: yes (cachedContent inside) thoughtsTokenCount APART
    Bedrock Converse               inputTokens: NO (cacheRead/WriteInputTokens) -
    DeepSeek                       prompt_tokens: yes (prompt_cache_hit_tokens) inside completion_tokens
    Gemini, xAI (OpenAI-compat)    prompt_tokens: yes                          OUTSIDE completion_tokens (total_tokens)

``Tokens`` is the one normal form: every count disjoint, so cost is a plain sum
(``cache_write_1h`` is the one sub-count: Anthropic's (and Bedrock's) one-hour cache writes, within
``cache_write``, priced at their own rate; ``audio_input`` and ``audio_output`` likewise, of fresh input and
output: OpenAI's audio tokens, inside ``prompt_tokens`` and ``completion_tokens``). Beside the tokens it counts
the web searches a provider ran on its side (Anthropic's ``server_tool_use``), billed per search, and keeps
where the call ran (Anthropic's ``inference_geo``: US-only inference is billed at a multiple).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aigw.types import JSON


@dataclass(slots=True)
class Tokens:
    """Disjoint counts: input = fresh + cached + cache_write; output = text + reasoning."""

    fresh_input: int = 0
    cached_input: int = 0
    cache_write: int = 0
    output: int = 0  # completion tokens that are not reasoning
    reasoning: int = 0
    cache_write_1h: int = 0  # of cache_write: written for one hour (Anthropic bills 2x input, not 1.25x)
    web_searches: int = 0  # server-side web searches the provider ran (Anthropic bills each, beside tokens)
    audio_input: int = 0  # of fresh_input: audio (OpenAI's audio models bill it at its own rate)
    audio_output: int = 0  # of output: audio
    geo: str = ""  # where the call ran, as the provider says (Anthropic's inference_geo: "us" costs more)

    @property
    def prompt(self) -> int:
        return self.fresh_input + self.cached_input + self.cache_write

    @property
    def completion(self) -> int:
        return self.output + self.reasoning

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def _i(d: Any, *path: str) -> int:
    for p in path:
        if not isinstance(d, dict):
            return 0
        d = d.get(p)
    try:
        return max(0, int(d or 0))
    except (TypeError, ValueError):
        return 0


def _split(prompt: int, cached: int, write: int, completion: int, reasoning: int, write_1h: int = 0) -> Tokens:
    cached, write = min(cached, prompt), min(write, max(0, prompt - cached))
    reasoning = min(reasoning, completion)
    return Tokens(prompt - cached - write, cached, write, completion - reasoning, reasoning, min(write_1h, write))


def tokens_from_usage(usage: Any) -> Tokens | None:
    """Normal form of a usage object in any known shape; None when there is none, or no prompt count in it."""
    if not isinstance(usage, dict) or not usage:
        return None
    if "promptTokenCount" in usage or "candidatesTokenCount" in usage:  # Gemini
        # toolUsePromptTokenCount (tool results the model read) is input outside promptTokenCount
        prompt = _i(usage, "promptTokenCount") + _i(usage, "toolUsePromptTokenCount")
        thoughts = _i(usage, "thoughtsTokenCount")
        return _split(prompt, _i(usage, "cachedContentTokenCount"), 0,
                      _i(usage, "candidatesTokenCount") + thoughts, thoughts)
    if "inputTokens" in usage:  # Bedrock Converse
        read, write = _i(usage, "cacheReadInputTokens"), _i(usage, "cacheWriteInputTokens")
        details = usage.get("cacheDetails")  # writes by TTL: [{"ttl": "1h" | "5m", "inputTokens": n}]
        hour = sum(_i(d, "inputTokens") for d in details if isinstance(d, dict) and d.get("ttl") == "1h") \
            if isinstance(details, list) else 0
        return _split(_i(usage, "inputTokens") + read + write, read, write, _i(usage, "outputTokens"), 0, hour)
    if "input_tokens" in usage and "prompt_tokens" not in usage:
        if "input_tokens_details" in usage:  # OpenAI Responses API
            return _split(_i(usage, "input_tokens"), _i(usage, "input_tokens_details", "cached_tokens"), 0,
                          _i(usage, "output_tokens"), _i(usage, "output_tokens_details", "reasoning_tokens"))
        read, write = _i(usage, "cache_read_input_tokens"), _i(usage, "cache_creation_input_tokens")  # Anthropic
        return _searched(_split(_i(usage, "input_tokens") + read + write, read, write, _i(usage, "output_tokens"),
                                _i(usage, "output_tokens_details", "thinking_tokens"),
                                _i(usage, "cache_creation", "ephemeral_1h_input_tokens")), usage)
    raw_p, raw_c, raw_t = usage.get("prompt_tokens"), usage.get("completion_tokens"), usage.get("total_tokens")
    if (type(raw_p) is int and type(raw_c) is int and "prompt_tokens_details" not in usage
            and "completion_tokens_details" not in usage and "prompt_cache_hit_tokens" not in usage
            and (type(raw_t) is not int or raw_t <= raw_p + raw_c)):
        return Tokens(max(0, raw_p), 0, 0, max(0, raw_c), 0)  # the common plain shape, fast
    if not isinstance(raw_p, int | float | str) or isinstance(raw_p, bool):
        # null counts, or a completion count alone (some compatible servers and proxies): no usage, so the
        # call is counted locally, never billed a prompt of 0
        return None
    prompt, completion = _i(usage, "prompt_tokens"), _i(usage, "completion_tokens")
    reasoning = _i(usage, "completion_tokens_details", "reasoning_tokens")
    # Thinking reported outside completion_tokens (Gemini's and xAI's OpenAI-compatible APIs): total_tokens
    # counts it, and it is billed as output; OpenAI's own total is always prompt + completion
    unreported = _i(usage, "total_tokens") - prompt - completion
    if unreported > 0:
        completion += unreported
        reasoning = max(reasoning, unreported)
    cached = _i(usage, "prompt_tokens_details", "cached_tokens") or _i(usage, "prompt_cache_hit_tokens")
    tokens = _split(prompt, cached, _i(usage, "prompt_tokens_details", "cache_write_tokens"), completion,
                    reasoning, _i(usage, "prompt_tokens_details", "cache_write_1h_tokens"))
    if audio := _i(usage, "prompt_tokens_details", "audio_tokens"):
        tokens.audio_input = min(audio, tokens.fresh_input)
    if audio := _i(usage, "completion_tokens_details", "audio_tokens"):
        tokens.audio_output = min(audio, tokens.output)
    return _searched(tokens, usage)


def _searched(tokens: Tokens, usage: JSON) -> Tokens:
    """With the web searches of Anthropic's ``server_tool_use`` and its ``inference_geo`` (both kept as they are in
    canonical usage)."""
    if "server_tool_use" in usage:
        tokens.web_searches = _i(usage, "server_tool_use", "web_search_requests")
    if isinstance(geo := usage.get("inference_geo"), str):
        tokens.geo = geo
    return tokens


def canonical_usage(t: Tokens, completion: bool = True) -> JSON:
    """``t`` as an OpenAI usage object (the inverse of ``tokens_from_usage`` for a local count), so a client is
    told the figures it is billed; ``completion`` False: an embeddings list's shape (no completion count)."""
    usage: JSON = {"prompt_tokens": t.prompt}
    if completion:
        usage["completion_tokens"] = t.completion
    usage["total_tokens"] = t.total if completion else t.prompt
    if t.cached_input or t.cache_write:
        usage["prompt_tokens_details"] = {"cached_tokens": t.cached_input, "cache_write_tokens": t.cache_write}
    if t.reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": t.reasoning}
    return usage
