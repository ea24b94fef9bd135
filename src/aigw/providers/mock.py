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
MAX_DIMENSIONS = 3072  # the most an OpenAI embedding model makes (text-embedding-3-large)
MAX_INPUTS = 2048  # the most inputs OpenAI embeds in one request


def estimate_tokens(text: str) -> int:
    """About four characters a token: the mock's own honest, stable count."""
    return max(1, (len(text) + 3) // 4) if text else 0


def _digest(body: JSON) -> bytes:
    return hashlib.blake2b(orjson.dumps(body.get("messages"), option=orjson.OPT_SORT_KEYS), digest_size=8).digest()


def answer_text(body: JSON) -> tuple[str, str]:
    """The mock's reply, an echo of the question plus words picked by its hash, and its finish_reason:
    ``length`` when ``max_tokens`` cut it short (as a real model says, so clients can tell); it ends where the
    first ``stop`` string in it begins. Asked for JSON
    (``response_format``), the reply is JSON: an example of the schema, or ``{"answer": ...}``, so the SDKs'
    ``.parse()`` gets what a real model would give it."""
    question = last_user_text(body).strip().replace("\n", " ")
    seed = int.from_bytes(_digest(body), "big")
    words = [_WORDS[(seed >> (4 * i)) % len(_WORDS)] for i in range(8)]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    text = f"Mock answer to: {question[:200]} [{' '.join(words)}]"
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
        text = orjson.dumps(_example_for(schema, schema)).decode()
    elif fmt.get("type") == "json_object":
        text = orjson.dumps({"answer": text}).decode()
    stops = body.get("stop")
    for stop in [stops] if isinstance(stops, str) else stops or ():
        if stop and stop in text:  # as a model does: the answer ends before it, and the stop string is not sent
            text = text[: text.index(stop)]
    if limit and len(text) > max(1, int(limit) * 4):
        return text[: max(1, int(limit) * 4)], "length"
    return text, "stop"


# an example's bounds, whatever its schema asks: how many copies of a value nested arrays make in all, and how
# long a string (shorter inside many copies); unbounded, a schema of a few lines asked for gigabytes
MAX_COPIES, MAX_TEXT = 256, 4096


def _example_for(schema: dict[str, Any], root: dict[str, Any], depth: int = 0, copies: int = 1) -> Any:
    """A value that fits a JSON schema: local ``$ref``s (pydantic's ``$defs``) followed, the first branch of
    an ``anyOf`` taken, bounded in depth (a recursive model ends in null) and in size (``MAX_COPIES``,
    ``MAX_TEXT``: a ``minItems`` or ``minLength`` past them is not met). ``copies``: how many times the
    enclosing arrays repeat this value."""
    if depth > 8:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return _example_for(target if isinstance(target, dict) else {}, root, depth + 1, copies)
    branches = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(branches, list) and branches:
        typed = [b for b in branches if isinstance(b, dict) and b.get("type") != "null"] or branches
        return _example_for(typed[0], root, depth + 1, copies)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    if kind == "object":
        props = schema.get("properties") or {}
        required = schema.get("required") or list(props)
        return {k: _example_for(props.get(k) or {}, root, depth + 1, copies) for k in required}
    if kind == "array":
        count = max(1, min(int(schema.get("minItems") or 1), 16, MAX_COPIES // copies))
        return [_example_for(schema.get("items") or {}, root, depth + 1, copies * count)] * count
    if kind in ("integer", "number"):
        return _number_for(schema, kind)
    if kind in ("boolean", "null"):
        return kind == "boolean" or None
    text = _FORMATS.get(str(schema.get("format")), "mock")
    text = text.ljust(min(int(schema.get("minLength") or 0), max(16, MAX_TEXT // copies)), "k")
    return text[: int(schema["maxLength"])] if isinstance(schema.get("maxLength"), int) else text


# a string of each format pydantic's models ask for (datetime, date, UUID, ...), so ``.parse()`` reads it
_FORMATS = {"date-time": "2025-01-01T00:00:00Z", "date": "2025-01-01", "time": "00:00:00", "duration": "P1D",
            "uuid": "00000000-0000-4000-8000-000000000000", "email": "mock@example.com",
            "uri": "https://example.com/", "ipv4": "127.0.0.1", "ipv6": "::1", "hostname": "example.com"}


def _number_for(schema: dict[str, Any], kind: str) -> int | float:
    """1, or the nearest value inside the schema's bounds (a whole number for ``integer``)."""
    lo, hi, xlo, xhi = (schema.get(k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"))
    lows = [v for v in (lo, xlo) if isinstance(v, (int, float))]
    highs = [v for v in (hi, xhi) if isinstance(v, (int, float))]
    low, high = max(lows, default=None), min(highs, default=None)
    value: float = 1
    if low is not None and value <= low:
        value = low
    if high is not None and value >= high:
        value = high
    if value in (xlo, xhi):  # on an exclusive bound: step inside
        step = 1 if value == xlo else -1
        middle = (low + high) / 2 if low is not None and high is not None else value + step
        value = value + step if kind == "integer" else middle
    return int(value) if kind == "integer" else value


def _tool_name(tool: JSON) -> Any:
    return (tool.get(tool.get("type") or "function") or {}).get("name")


def _call(tool: JSON, call_id: str, question: str) -> JSON:
    """A call of a function tool (arguments from its schema) or of a custom tool (free text: the question)."""
    if tool.get("type") == "custom":
        return {"id": call_id, "type": "custom", "custom": {"name": _tool_name(tool), "input": question or "mock"}}
    schema = tool["function"].get("parameters") or {}
    example = _example_for(schema, schema)
    # arguments are always a JSON object: a function without parameters is called with {}
    args = orjson.dumps(example if isinstance(example, dict) else {}).decode()
    return {"id": call_id, "type": "function", "function": {"name": _tool_name(tool), "arguments": args}}


def tool_calls_for(body: JSON) -> list[JSON] | None:
    """Call the offered tools when the last turn is the user's (agents then see a result), or whatever the
    last turn when ``tool_choice`` forces a call (``required``, a named tool, ``allowed_tools`` in ``required``
    mode); only the tools ``allowed_tools`` lists."""
    tools = body.get("tools") or []
    messages = body.get("messages") or []
    choice = body.get("tool_choice")
    chosen, forced = tools, choice == "required"
    if isinstance(choice, dict) and choice.get("type") in ("function", "custom", None):
        name = (choice.get(choice.get("type") or "function") or {}).get("name")
        chosen, forced = [t for t in tools if _tool_name(t) == name] or tools[:1], True
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        names = {_tool_name(t) for t in allowed.get("tools") or () if isinstance(t, dict)}
        chosen, forced = [t for t in tools if _tool_name(t) in names], allowed.get("mode") == "required"
    if not chosen or choice == "none" or not messages or (messages[-1].get("role") != "user" and not forced):
        return None
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
        one = estimate_tokens(text) + (sum(len(call_text(c) or "") // 4 + 5 for c in calls or ()))
        completion = one * _choices(body)  # n answers, each billed (as OpenAI does)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        return text, calls, usage, finish

    async def chat(self, body: JSON, call: CallOptions) -> JSON:
        call.sent = True  # the mock takes every call at once (``CallOptions.sent``)
        await self._delay()
        self._maybe_fail()
        text, calls, usage, finish = self._completion(body)
        logprobs = _logprobs(_pieces(text), body) if not calls else None
        message: JSON = {"role": "assistant", "content": None if calls else text, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        return {
            "id": f"chatcmpl-mock{_digest(body).hex()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.upstream_model,
            "choices": [
                {"index": i, "message": dict(message), "logprobs": logprobs, "finish_reason": finish}
                for i in range(_choices(body))
            ],
            "usage": usage,
            "system_fingerprint": "fp_mock",
        }

    async def stream_chat(self, body: JSON, call: CallOptions) -> AsyncIterator[JSON]:
        """Each of the ``n`` choices in turn (role, content or tool calls, finish), then usage if asked."""
        call.sent = True
        await self._delay()
        self._maybe_fail()
        text, calls, usage, finish = self._completion(body)
        base = {"id": f"chatcmpl-mock{_digest(body).hex()}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": self.upstream_model, "system_fingerprint": "fp_mock"}
        gap = self.options.stream_chunk_ms / 1000
        pieces = _pieces(text)

        def chunk(index: int, delta: JSON, finish: str | None = None, logprobs: JSON | None = None) -> JSON:
            return {**base, "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                         "finish_reason": finish}]}

        for index in range(_choices(body)):
            yield chunk(index, {"role": "assistant", "content": None if calls else ""})  # as OpenAI streams it
            for i, c in enumerate(calls or ()):
                kind, field = ("custom", "input") if c["type"] == "custom" else ("function", "arguments")
                head = {"index": i, "id": c["id"], "type": kind, kind: {"name": c[kind]["name"], field: ""}}
                yield chunk(index, {"tool_calls": [head]})
                args = c[kind][field]
                for j in range(0, len(args), 8):
                    yield chunk(index, {"tool_calls": [{"index": i, kind: {field: args[j : j + 8]}}]})
            for piece in pieces if not calls else ():
                if gap:
                    await asyncio.sleep(gap)
                yield chunk(index, {"content": piece}, logprobs=_logprobs([piece], body))
            yield chunk(index, {}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            yield {**base, "choices": [], "usage": usage}

    async def embeddings(self, body: JSON, call: CallOptions) -> JSON:
        call.sent = True
        await self._delay()
        self._maybe_fail()
        value = body["input"]
        # a string or one list of token ids is one input (as OpenAI reads it); any other list is a batch
        one = isinstance(value, str) or (isinstance(value, list) and bool(value) and isinstance(value[0], int))
        inputs = [value] if one else value
        if len(inputs) > MAX_INPUTS:  # as OpenAI refuses it; unbounded, a small body asked for millions of floats
            raise errors.InvalidRequest(f"Invalid 'input': array too long. Expected an array with maximum length "
                                        f"{MAX_INPUTS}, but got an array with length {len(inputs)} instead.",
                                        param="input", code="array_above_max_length")
        dims = int(body.get("dimensions") or 16)
        if dims > MAX_DIMENSIONS:  # as a real model refuses it; unbounded, one request's vector filled the memory
            raise errors.InvalidRequest(f"Invalid 'dimensions': integer above maximum value. Expected a value <= "
                                        f"{MAX_DIMENSIONS}, but got {dims} instead.", param="dimensions",
                                        code="integer_above_max_value")
        data, tokens = [], 0
        for i, item in enumerate(inputs):
            text = item if isinstance(item, str) else orjson.dumps(item).decode()
            tokens += estimate_tokens(text) if isinstance(item, str) else len(item)  # token ids: one each
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


def _choices(body: JSON) -> int:
    return int(body.get("n") or 1)


def _pieces(text: str) -> list[str]:
    """The reply's tokens as the mock streams them: words, each after the first with its leading space."""
    words = text.split(" ")
    return [words[0], *(" " + w for w in words[1:])] if text else []


def _logprob(token: str) -> float:
    return -round(int.from_bytes(hashlib.blake2b(token.encode(), digest_size=2).digest(), "big") / 65536, 4)


def _logprobs(tokens: list[str], body: JSON) -> JSON | None:
    """OpenAI's ``choice.logprobs`` for these tokens when the request asked (``logprobs: true``), with
    ``top_logprobs`` alternatives each; None when it did not, as OpenAI answers."""
    if body.get("logprobs") is not True:
        return None
    top = int(body.get("top_logprobs") or 0)
    content = []
    for token in tokens:
        own = _logprob(token)
        others = [t for t in _alternatives(top) if t != token][: max(0, top - 1)]
        alts = [(token, own)] + [(t, own - 1.0 - i) for i, t in enumerate(others)]
        content.append({"token": token, "logprob": own, "bytes": list(token.encode()),
                        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                                         for t, lp in alts[:top]]})
    return {"content": content, "refusal": None}


def _alternatives(top: int) -> list[str]:
    """``top`` distinct tokens to offer as a token's alternatives (one may be the token itself): the words,
    then the words numbered, as many as asked."""
    return [f" {_WORDS[i % len(_WORDS)]}{i // len(_WORDS) or ''}" for i in range(top)]


def _vector(text: str, dims: int) -> list[float]:
    raw = hashlib.shake_256(text.encode()).digest(dims * 2)
    vec = [(int.from_bytes(raw[i * 2 : i * 2 + 2], "big") / 32767.5) - 1.0 for i in range(dims)]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [v / norm for v in vec]


def build(deployment: Deployment, clients: HttpClients) -> Provider:
    return MockProvider(deployment)
