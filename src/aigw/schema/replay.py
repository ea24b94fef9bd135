"""A whole canonical answer (``chat.completion``, or ``text_completion`` for legacy /v1/completions) as the
short, well-formed chunk sequence a live stream would have sent: role, content, tool calls or a legacy
function call, other message fields, finish, usage (for a completion: text, finish, usage).

Pure dict work, shared by the cache (a hit on a streaming request), the rules and output stages (an answer
they hold whole) and the OpenAI-family adapter (an upstream that ignored ``stream: true`` and answered with a
plain JSON body). Each inbound API then writes the chunks as its own SSE.
"""

from __future__ import annotations

from typing import Any

from aigw.schema.anthropic import START_USAGE
from aigw.types import JSON

_PRIVATE = "_anthropic"
# message (and delta) fields with their own handling; any other (annotations, audio, ...) is carried through
KNOWN_FIELDS = frozenset({"role", "content", "refusal", "reasoning_content", "tool_calls", "function_call", _PRIVATE})


def replay_chunks(body: JSON) -> list[JSON]:
    """A whole (stored, held or unstreamed) chat.completion as the chunk sequence a live stream would have sent."""
    if body.get("object") == "text_completion":
        return _completion_chunks(body)
    head = {"id": body.get("id"), "object": "chat.completion.chunk", "created": body.get("created"),
            "model": body.get("model")}
    for key in ("service_tier", "system_fingerprint"):  # as every live chunk has them (the tier is billed from it)
        if body.get(key):
            head[key] = body[key]

    def chunk(index: int, delta: JSON, finish: Any = None, logprobs: Any = None) -> JSON:
        return {**head, "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                     "finish_reason": finish}]}

    out: list[JSON] = []
    for choice in body.get("choices") or ():
        i, msg = _index(choice), choice.get("message") or {}
        out.append(chunk(i, {"role": "assistant", "content": None if msg.get("content") is None else ""}))
        if msg.get("reasoning_content"):
            out.append(chunk(i, {"reasoning_content": msg["reasoning_content"]}))
        logprobs = choice.get("logprobs")  # on the first chunk with text: the content's, else the refusal's
        if msg.get("content"):
            out.append(chunk(i, {"content": msg["content"]}, logprobs=logprobs))
            logprobs = None
        if msg.get("refusal"):
            out.append(chunk(i, {"refusal": msg["refusal"]}, logprobs=logprobs))
        for n, call in enumerate(msg.get("tool_calls") or ()):
            out.append(chunk(i, {"tool_calls": [{"index": n, **call}]}))
        if msg.get("function_call"):
            out.append(chunk(i, {"function_call": msg["function_call"]}))
        other = _other_fields(msg)
        if other is not None:  # annotations, audio, ...: one delta, as a live stream sends them whole
            out.append(chunk(i, other))
        out.append(chunk(i, {}, choice.get("finish_reason") or "stop"))
    if isinstance(body.get(_PRIVATE), dict) and out:
        out[-1][_PRIVATE] = body[_PRIVATE]
    if body.get("usage"):
        out.append({**head, "choices": [], "usage": body["usage"]})
        if out[0] is not out[-1]:  # known up front, as a live stream's first chunk has it (for message_start)
            out[0][_PRIVATE] = {**out[0].get(_PRIVATE, {}), START_USAGE: body["usage"]}
    return out


def _other_fields(msg: JSON) -> JSON | None:
    """The message's fields with no rule of their own that say something (not null, not [])."""
    other = None
    for k in msg:  # a plain loop: the cheapest way to find nothing, the usual answer
        if k not in KNOWN_FIELDS:
            v = msg[k]
            if v is not None and v != []:
                if other is None:
                    other = {}
                other[k] = v
    return other


def _completion_chunks(body: JSON) -> list[JSON]:
    """A whole text_completion as a live stream sends it: the text, then the finish, then usage."""
    head = {"id": body.get("id"), "object": "text_completion", "created": body.get("created"),
            "model": body.get("model")}
    out: list[JSON] = []
    for choice in body.get("choices") or ():
        i = _index(choice)
        out.append({**head, "choices": [{"index": i, "text": choice.get("text") or "",
                                         "logprobs": choice.get("logprobs"), "finish_reason": None}]})
        out.append({**head, "choices": [{"index": i, "text": "", "logprobs": None,
                                         "finish_reason": choice.get("finish_reason") or "stop"}]})
    if body.get("usage"):
        out.append({**head, "choices": [], "usage": body["usage"]})
    return out


def _index(choice: JSON) -> int:
    """A choice's index; 0 when an upstream sent none, null or a non-number (the answer still replays)."""
    index = choice.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else 0
