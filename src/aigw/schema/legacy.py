"""Legacy /v1/completions served by chat-only providers: pure translations."""

from __future__ import annotations

from typing import Any

from aigw import errors
from aigw.types import JSON

_PASS = ("max_tokens", "temperature", "top_p", "n", "stop", "seed", "user", "presence_penalty",
         "frequency_penalty", "logit_bias", "stream", "stream_options")


def _untranslatable(body: JSON) -> str | None:
    """A legacy field that changes the answer and that a chat call cannot do, or None."""
    if body.get("echo"):
        return "echo"
    if body.get("suffix"):
        return "suffix"
    if body.get("logprobs") is not None:
        return "logprobs"
    if body.get("max_tokens") == 0:  # legacy allows 0 (with echo: the prompt alone); a chat call makes at least one
        return "max_tokens"
    best_of, n = body.get("best_of"), body.get("n")
    if isinstance(best_of, int) and best_of > (n if isinstance(n, int) else 1):
        return "best_of"
    return None


def completion_to_chat(body: JSON) -> JSON:
    """The chat request for a legacy completion; a field chat cannot honour is refused, never dropped (the
    client would get an answer without the echo, suffix, logprobs or best-of choice it asked for)."""
    if (field := _untranslatable(body)) is not None:
        raise errors.InvalidRequest(
            f"this model serves /v1/completions by chat translation, which cannot honour '{field}'",
            param=field,
        )
    prompt = body["prompt"]
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise errors.InvalidRequest(
                "this model serves /v1/completions by chat translation: 'prompt' must be one string",
                param="prompt",
            )
        prompt = prompt[0]
    chat: JSON = {"model": body["model"], "messages": [{"role": "user", "content": prompt}]}
    for key in _PASS:
        if body.get(key) is not None:
            chat[key] = body[key]
    return chat


def _finish(reason: Any) -> Any:
    return "stop" if reason == "tool_calls" else reason


def chat_to_completion(resp: JSON) -> JSON:
    return {
        "id": str(resp.get("id", "")).replace("chatcmpl", "cmpl", 1),
        "object": "text_completion",
        "created": resp.get("created", 0),
        "model": resp.get("model", ""),
        "choices": [
            {
                "index": c.get("index", 0),
                "text": (c.get("message") or {}).get("content") or "",
                "logprobs": None,
                "finish_reason": _finish(c.get("finish_reason")),
            }
            for c in resp.get("choices", ())
        ],
        **({"usage": resp["usage"]} if resp.get("usage") else {}),
    }


def chat_chunk_to_completion_chunk(chunk: JSON) -> JSON:
    out: JSON = {
        "id": str(chunk.get("id", "")).replace("chatcmpl", "cmpl", 1),
        "object": "text_completion",
        "created": chunk.get("created", 0),
        "model": chunk.get("model", ""),
        "choices": [
            {
                "index": c.get("index", 0),
                "text": (c.get("delta") or {}).get("content") or "",
                "logprobs": None,
                "finish_reason": _finish(c.get("finish_reason")),
            }
            for c in chunk.get("choices", ())
        ],
    }
    if chunk.get("usage"):
        out["usage"] = chunk["usage"]
    return out
