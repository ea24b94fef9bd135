"""The deterministic mock provider: demos, tests and chaos drills with no network.

Answers are derived from the input (same request, same answer), tools are called
when offered, and latency, stream speed, failure rate and failure kind come from
config. Failures are drawn from a seeded RNG so a drill replays identically.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from aigw import errors
from aigw.config.models import Deployment, MockOptions
from aigw.providers.base import CallOptions, Provider
from aigw.providers.http import HttpClients
from aigw.schema.openai import call_text, content_text, last_user_text
from aigw.types import JSON

_WORDS = ("alpha", "bravo", "delta", "echo", "gamma", "kilo", "lima", "nova", "orbit", "pixel", "quartz", "sierra")
_FAILURES: dict[str, type[errors.GatewayError]] = {
    "upstream_error": errors.UpstreamError,
    "unavailable": errors.Unavailable,
    "rate_limited": errors.RateLimited,
    "timeout": errors.UpstreamTimeout,
    "context_length_exceeded": errors.ContextLengthExceeded,
    "content_policy": errors.ContentPolicy,
}


def estimate_tokens(text: str) -> int:
    """About four characters a token: the mock's own honest, stable count."""
    return max(1, (len(text) + 3) // 4) if text else 0


def _digest(body: JSON) -> bytes:
    return hashlib.blake2b(orjson.dumps(body.get("messages"), option=orjson.OPT_SORT_KEYS), digest_size=8).digest()


def answer_text(body: JSON) -> tuple[str, str]:
    """The mock's reply, an echo of the question plus words picked by its hash, and its finish_reason:
    ``length`` when ``max_tokens`` cut it short (as a real model says, so clients can tell)."""
    question = last_user_text(body).strip().replace("\n", " ")
    seed = int.from_bytes(_digest(body), "big")
    words = [_WORDS[(seed >> (4 * i)) % len(_WORDS)] for i in range(8)]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    text = f"Mock answer to: {question[:200]} [{' '.join(words)}]"
    if limit and len(text) > max(1, int(limit) * 4):
        return text[: max(1, int(limit) * 4)], "length"
    return text, "stop"


def _example_for(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object":
        props = schema.get("properties") or {}
        required = schema.get("required") or list(props)
        return {k: _example_for(props.get(k) or {}) for k in required}
    if kind == "array":
        return [_example_for(schema.get("items") or {})]
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    return "mock"


def _tool_name(tool: JSON) -> Any:
    return (tool.get(tool.get("type") or "function") or {}).get("name")


def _call(tool: JSON, call_id: str, question: str) -> JSON:
    """A call of a function tool (arguments from its schema) or of a custom tool (free text: the question)."""
    if tool.get("type") == "custom":
        return {"id": call_id, "type": "custom", "custom": {"name": _tool_name(tool), "input": question or "mock"}}
    args = orjson.dumps(_example_for(tool["function"].get("parameters") or {})).decode()
    return {"id": call_id, "type": "function", "function": {"name": _tool_name(tool), "arguments": args}}


def tool_calls_for(body: JSON) -> list[JSON] | None:
    """Call the offered tools when the last turn is the user's (agents then see a result)."""
    tools = body.get("tools") or []
    messages = body.get("messages") or []
    choice = body.get("tool_choice")
    if not tools or choice == "none" or not messages or messages[-1].get("role") != "user":
        return None
    chosen = tools
    if isinstance(choice, dict) and choice.get("type") in ("function", "custom", None):
        name = (choice.get(choice.get("type") or "function") or {}).get("name")
        chosen = [t for t in tools if _tool_name(t) == name] or tools[:1]
    if body.get("parallel_tool_calls") is False:
        chosen = chosen[:1]
    digest = _digest(body).hex()
    question = last_user_text(body).strip()[:200]
    return [_call(t, f"call_{digest[:12]}{i}", question) for i, t in enumerate(chosen[:2])]


def _prompt_tokens(body: JSON) -> int:
    return sum(estimate_tokens(content_text(m.get("content"))) + 3 for m in body.get("messages") or ())


class MockProvider:
    kind = "mock"

    def __init__(self, deployment: Deployment) -> None:
        self.upstream_model = deployment.model
        self.options: MockOptions = deployment.mock
        self._rng = random.Random(self.options.seed)

    def _maybe_fail(self) -> None:
        if self.options.fail_rate and self._rng.random() < self.options.fail_rate:
            cls = _FAILURES[self.options.fail_kind]
            retry_after = 1.0 if cls is errors.RateLimited else None
            raise cls(f"mock failure ({self.options.fail_kind})", retry_after=retry_after)

    async def _delay(self) -> None:
        if self.options.latency_ms:
            await asyncio.sleep(self.options.latency_ms / 1000)

    def _completion(self, body: JSON) -> tuple[str, list[JSON] | None, JSON, str]:
        calls = tool_calls_for(body)
        text, finish = ("", "tool_calls") if calls else answer_text(body)
        prompt = _prompt_tokens(body)
        completion = estimate_tokens(text) + (sum(len(call_text(c) or "") // 4 + 5 for c in calls or ()))
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        return text, calls, usage, finish

    async def chat(self, body: JSON, call: CallOptions) -> JSON:
        call.sent = True  # the mock takes every call at once (``CallOptions.sent``)
        await self._delay()
        self._maybe_fail()
        text, calls, usage, finish = self._completion(body)
        message: JSON = {"role": "assistant", "content": None if calls else text, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        n = int(body.get("n") or 1)
        return {
            "id": f"chatcmpl-mock{_digest(body).hex()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.upstream_model,
            "choices": [
                {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
                for i in range(n)
            ],
            "usage": usage,
            "system_fingerprint": "fp_mock",
        }

    async def stream_chat(self, body: JSON, call: CallOptions) -> AsyncIterator[JSON]:
        call.sent = True
        await self._delay()
        self._maybe_fail()
        text, calls, usage, finish = self._completion(body)
        base = {"id": f"chatcmpl-mock{_digest(body).hex()}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": self.upstream_model, "system_fingerprint": "fp_mock"}
        gap = self.options.stream_chunk_ms / 1000

        def chunk(delta: JSON, finish: str | None = None) -> JSON:
            return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        yield chunk({"role": "assistant", "content": ""})
        if calls:
            for i, c in enumerate(calls):
                kind, field = ("custom", "input") if c["type"] == "custom" else ("function", "arguments")
                head = {"index": i, "id": c["id"], "type": kind, kind: {"name": c[kind]["name"], field: ""}}
                yield chunk({"tool_calls": [head]})
                args = c[kind][field]
                for j in range(0, len(args), 8):
                    yield chunk({"tool_calls": [{"index": i, kind: {field: args[j : j + 8]}}]})
        else:
            pieces = text.split(" ")
            for i, word in enumerate(pieces):
                if gap:
                    await asyncio.sleep(gap)
                yield chunk({"content": word if i == 0 else " " + word})
        yield chunk({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            yield {**base, "choices": [], "usage": usage}

    async def embeddings(self, body: JSON, call: CallOptions) -> JSON:
        call.sent = True
        await self._delay()
        self._maybe_fail()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = int(body.get("dimensions") or 16)
        data, tokens = [], 0
        for i, item in enumerate(inputs):
            text = item if isinstance(item, str) else orjson.dumps(item).decode()
            tokens += estimate_tokens(text)
            vec = _vector(text, dims)
            emb: Any = vec
            if body.get("encoding_format") == "base64":
                emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return {"object": "list", "data": data, "model": self.upstream_model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    async def list_models(self, call: CallOptions) -> JSON:
        return {"object": "list", "data": [{"id": self.upstream_model, "object": "model", "owned_by": "mock"}]}

    async def aclose(self) -> None:
        return None


def _vector(text: str, dims: int) -> list[float]:
    raw = hashlib.shake_256(text.encode()).digest(dims * 2)
    vec = [(int.from_bytes(raw[i * 2 : i * 2 + 2], "big") / 32767.5) - 1.0 for i in range(dims)]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [v / norm for v in vec]


def build(deployment: Deployment, clients: HttpClients) -> Provider:
    return MockProvider(deployment)
