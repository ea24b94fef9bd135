"""OpenAI's legacy ``functions`` API on an Anthropic deployment, as pure dict work.

A request with ``functions`` (and maybe ``function_call``) is rewritten, still canonical, to the ``tools``
form before translation: each function a tool, ``function_call`` a ``tool_choice`` with parallel calls off
(the legacy API makes one call at a time), an assistant ``function_call`` a tool call and a ``function``
message its tool result. Legacy messages carry no ids, so a call's id is made from its place in the
history and its result takes the id of the call before it. The answer goes back to the legacy form: the
(one) tool call as ``function_call``, finish_reason ``function_call``, for whole answers and stream chunks.
"""

from __future__ import annotations

from typing import Any

from aigw.types import JSON


def uses_functions(body: JSON) -> bool:
    """Whether a request is in the legacy form (``functions``, no ``tools``)."""
    return bool(body.get("functions")) and not body.get("tools")


def _choice(function_call: Any) -> Any:
    if isinstance(function_call, dict) and isinstance(function_call.get("name"), str):
        return {"type": "function", "function": {"name": function_call["name"]}}
    return function_call if function_call in ("auto", "none") else None


def _messages(messages: Any) -> Any:
    if not isinstance(messages, list):
        return messages
    out: list[Any] = []
    call_id = ""
    for i, msg in enumerate(messages):
        role = msg.get("role") if isinstance(msg, dict) else None
        if role == "assistant" and isinstance(msg.get("function_call"), dict) and not msg.get("tool_calls"):
            call_id = f"call_fn{i}"
            call = {"id": call_id, "type": "function", "function": msg["function_call"]}
            msg = {**{k: v for k, v in msg.items() if k != "function_call"}, "tool_calls": [call]}
        elif role == "function":
            msg = {"role": "tool", "tool_call_id": call_id or f"call_fn{i}", "content": msg.get("content")}
        out.append(msg)
    return out


def functions_as_tools(body: JSON) -> JSON:
    """A legacy-form request in the ``tools`` form (see the module)."""
    out = {k: v for k, v in body.items() if k not in ("functions", "function_call")}
    out["tools"] = [{"type": "function", "function": f} for f in body["functions"]]
    choice = _choice(body.get("function_call"))
    if choice is not None:
        out["tool_choice"] = choice
    if choice != "none":
        out["parallel_tool_calls"] = False
    out["messages"] = _messages(body.get("messages"))
    return out


def _legacy_finish(finish: Any) -> Any:
    return "function_call" if finish == "tool_calls" else finish


def response_as_function_call(resp: JSON) -> JSON:
    """A canonical answer's tool call as the legacy ``function_call``."""
    for choice in resp.get("choices") or ():
        message = choice.get("message") or {}
        calls = message.pop("tool_calls", None)
        if calls:
            message["function_call"] = dict(calls[0].get("function") or {})
        choice["finish_reason"] = _legacy_finish(choice.get("finish_reason"))
    return resp


def chunk_as_function_call(chunk: JSON) -> JSON:
    """A canonical stream chunk's tool-call delta as a ``function_call`` delta (only the first call)."""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        calls = delta.pop("tool_calls", None)
        first = next((c for c in calls or () if c.get("index", 0) == 0), None)
        if first is not None:
            delta["function_call"] = dict(first.get("function") or {})
        choice["finish_reason"] = _legacy_finish(choice.get("finish_reason"))
    return chunk
