"""Pure shaping of canonical bodies for OpenAI-family upstreams, and checks of their answers.

No I/O, no clock, no logging: tested on recorded wire fixtures. What differs between
upstreams of this family is *data* (a ``Shaping``), not branches: OpenAI's reasoning
models want ``max_completion_tokens``, many compatible servers want ``max_tokens``, some
reject ``stream_options`` or the ``developer`` role. Bodies are shallow-copied only when
a key actually changes; message lists only when a message changes.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aigw import errors
from aigw.schema.anthropic import PRIVATE_KEY, strip_private
from aigw.schema.anthropic_foreign import for_openai
from aigw.schema.openai import content_text  # text parts one per line: separate pieces, never glued
from aigw.types import JSON

# OpenAI models that reject ``max_tokens`` and want ``max_completion_tokens``.
REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
_CHUNK_HEAD = ("id", "object", "created", "model", "service_tier", "system_fingerprint")


@dataclass(frozen=True, slots=True)
class Shaping:
    """How one deployment's upstream wants the canonical body."""

    max_tokens_field: str | None = None  # rename the other max-tokens field to this one
    drop_params: frozenset[str] = frozenset()  # top-level keys the upstream rejects
    role_map: Mapping[str, str] = field(default_factory=dict)  # e.g. {"developer": "system"}
    merge_system_messages: bool = False  # one system message, first
    stream_options: bool = True  # False: the upstream rejects stream_options
    tool_calls_finish: bool = False  # True: the upstream says "stop" after tool calls (Gemini); say "tool_calls"
    no_file_parts: str | None = None  # why the upstream takes no ``file`` parts (Azure): a 400 before the call


PLAIN = Shaping()


def shaping_for_model(model: str) -> Shaping:
    """OpenAI's own rule set: only reasoning models need a change (a lossless rename)."""
    if model.removeprefix("ft:").startswith(REASONING_PREFIXES):  # fine-tuned: ft:o4-mini-...:org::id
        return Shaping(max_tokens_field="max_completion_tokens")
    return PLAIN


def shape_chat(body: JSON, model: str, shaping: Shaping, *, stream: bool) -> JSON:
    """The upstream chat body: upstream model id, stream flags, then the shaping rules.

    A body that came in through the Anthropic API carries a top-level ``_anthropic``
    marker; only then is it scanned for Anthropic-only extensions to drop.
    """
    foreign = PRIVATE_KEY in body
    if foreign:
        body = for_openai(body)  # what it cannot take is the client's 400 now, not the upstream's
    if shaping.no_file_parts is not None:
        refuse_file_parts(body, shaping.no_file_parts)
    if foreign:
        body = strip_private(body)
    out = _with_model(body, model)
    out = _stream_flags(out, body, shaping, stream)
    field_name = shaping.max_tokens_field
    if field_name is not None:
        other = "max_tokens" if field_name == "max_completion_tokens" else "max_completion_tokens"
        if other in out:
            out = _own(out, body)
            value = out.pop(other)
            out.setdefault(field_name, value)
    out = _dropped(out, body, shaping)
    if shaping.role_map or shaping.merge_system_messages:
        messages = out.get("messages")
        if isinstance(messages, list):
            shaped = shape_messages(messages, shaping)
            if shaped is not messages:
                out = _own(out, body)
                out["messages"] = shaped
    return out


def refuse_file_parts(body: JSON, why: str) -> None:
    """The client's 400 naming the first ``file`` part, for an upstream that takes none (``why`` says so): as
    the client wrote it (an Anthropic client's document: ``messages.0.content.1``), else OpenAI's way."""
    for i, msg in enumerate(body.get("messages") or ()):
        content = msg.get("content") if isinstance(msg, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else ()):
            if isinstance(part, dict) and part.get("type") == "file":
                private = part.get(PRIVATE_KEY)
                said = private.get("param") if isinstance(private, dict) else None
                param = said if isinstance(said, str) else f"messages[{i}].content[{j}]"
                raise errors.InvalidRequest(f"{param}: {why}; send the document as text, or to a model that reads "
                                            "PDFs", param=param)


def shape_completion(body: JSON, model: str, shaping: Shaping, *, stream: bool) -> JSON:
    """Legacy /completions body: model, stream flags and dropped keys (the API never grew new fields)."""
    return _dropped(_stream_flags(_with_model(body, model), body, shaping, stream), body, shaping)


def shape_embeddings(body: JSON, model: str, shaping: Shaping = PLAIN) -> JSON:
    return _dropped(_with_model(body, model), body, shaping)


def _dropped(out: JSON, body: JSON, shaping: Shaping) -> JSON:
    """``out`` without the keys the upstream rejects (``Shaping.drop_params``)."""
    for name in shaping.drop_params:
        if name in out:
            out = _own(out, body)
            del out[name]
    return out


def embeddings_as_asked(data: JSON, body: JSON) -> JSON:
    """The embeddings answer in the ``encoding_format`` the client asked for: servers that ignore it (some
    OpenAI-compatible ones) send floats where an explicit ``base64`` asked for OpenAI's little-endian float32
    string, and a client that asked for one cannot read a list. Untouched when the answer is already right."""
    if body.get("encoding_format") != "base64":
        return data
    items = data.get("data")
    if not isinstance(items, list) or not any(isinstance(i, dict) and isinstance(i.get("embedding"), list)
                                              for i in items):
        return data
    out = []
    for item in items:
        vec = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vec, list):
            item = {**item, "embedding": base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()}
        out.append(item)
    return {**data, "data": out}


def shape_messages(messages: list[JSON], shaping: Shaping) -> list[JSON]:
    """Apply role renames and system merging; returns the same list when nothing changes."""
    role_map = shaping.role_map
    if role_map and any(m.get("role") in role_map for m in messages):
        messages = [{**m, "role": role_map[m["role"]]} if m.get("role") in role_map else m for m in messages]
    if shaping.merge_system_messages:
        messages = merge_system_messages(messages)
    return messages


def merge_system_messages(messages: list[JSON]) -> list[JSON]:
    """One system message at the front, for chat templates that accept no other layout."""
    systems = [m for m in messages if m.get("role") == "system"]
    if not systems or (len(systems) == 1 and messages[0] is systems[0]):
        return messages
    text = "\n\n".join(t for t in (content_text(m.get("content")) for m in systems) if t)
    rest = [m for m in messages if m.get("role") != "system"]
    return [{"role": "system", "content": text}, *rest]


def tool_calls_finish(data: JSON) -> JSON:
    """A whole answer with ``finish_reason: "tool_calls"`` wherever the message calls tools and the upstream
    said ``"stop"`` (Gemini): agent loops run the tools only on ``tool_calls``. Changes ``data`` in place."""
    for choice in data.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and message.get("tool_calls") and choice.get("finish_reason") == "stop":
            choice["finish_reason"] = "tool_calls"
    return data


def reasoning_as_content(data: JSON) -> JSON:
    """A whole answer whose messages carry their thinking as ``reasoning`` (vLLM >= 0.17, OpenRouter, Ollama,
    Groq) with it as ``reasoning_content`` too, the field the gateway reads (Anthropic thinking blocks, cache,
    token counts); ``reasoning`` stays for clients that read it. Changes ``data`` in place."""
    for choice in data.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and "reasoning" in message and "reasoning_content" not in message:
            _reasoning_as_content(message)
    return data


def _reasoning_as_content(message: JSON) -> None:
    thought = message["reasoning"]
    if isinstance(thought, str) and thought:
        message["reasoning_content"] = thought


def checked(data: Any, key: str, what: str) -> JSON:
    """Pass an upstream answer through after checking the one key callers rely on."""
    if isinstance(data, dict) and isinstance(data.get(key), list):
        return data
    err = errors.UpstreamError(f"upstream sent a {what} without {key!r}")
    err.reached_upstream = True  # a 200 answer all the same: the upstream took (and may bill) the call
    raise err


class UsageMover:
    """Keep a stream's usage in its last chunk, where OpenAI puts it.

    Servers that ignore ``stream_options`` put usage on a content chunk (or, like Groq,
    in ``x_groq``); it is taken off there and sent as a final usage-only chunk. Chunks
    with no choices and no usage (Azure's prompt-filter preamble) carry nothing
    canonical and are skipped. Tool-call deltas without an ``index`` get one (``_index_calls``).
    With ``tool_calls_finish``, a choice that streamed tool calls finishes with ``tool_calls``
    where the upstream said ``stop`` (Gemini).
    """

    __slots__ = ("_calls", "_last", "_tool_calls_finish", "_usage")

    def __init__(self, tool_calls_finish: bool = False) -> None:
        self._usage: Any = None
        self._last: JSON | None = None
        self._calls: dict[Any, tuple[dict[Any, int], int]] | None = None  # per choice: call ids, last index
        self._tool_calls_finish = tool_calls_finish

    def see(self, chunk: JSON) -> JSON | None:
        """Return the chunk to forward, or None to skip it."""
        if chunk.get("choices"):
            for choice in chunk["choices"]:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if delta is None and isinstance(choice, dict) and "text" not in choice:
                    return self._annotation(chunk)  # Azure's asynchronous filter: no delta, no id
                calls = delta.get("tool_calls") if isinstance(delta, dict) else None
                if isinstance(delta, dict) and "reasoning" in delta and "reasoning_content" not in delta:
                    _reasoning_as_content(delta)
                if calls and isinstance(calls, list):
                    self._index_calls(choice.get("index", 0), calls)
                if (self._tool_calls_finish and self._calls and choice.get("finish_reason") == "stop"
                        and choice.get("index", 0) in self._calls):
                    choice["finish_reason"] = "tool_calls"
            usage = chunk.get("usage")
            if usage is None and "x_groq" in chunk:
                extra = chunk["x_groq"]
                usage = extra.get("usage") if isinstance(extra, dict) else None
            if usage:
                self._usage = usage
                chunk["usage"] = None
            self._last = chunk
            return chunk
        if chunk.get("usage"):
            self._usage = None  # a proper usage chunk: nothing left to move
            return chunk
        return None

    def _annotation(self, chunk: JSON) -> JSON | None:
        """A chunk of Azure's asynchronous content filter: choices with ``content_filter_results`` but no
        ``delta``, and an empty ``id``, ``model`` and ``object``. The SDKs read ``choices[0].delta`` of every
        chunk, so a choice that only annotates is dropped, and one that ends the answer (``finish_reason:
        "content_filter"``, the filter's verdict) is sent with an empty delta, in the stream's own chunk head."""
        choices = []
        for choice in chunk["choices"]:
            if not isinstance(choice, dict) or "delta" in choice or "text" in choice:
                choices.append(choice)
            elif choice.get("finish_reason"):
                choices.append({**choice, "delta": {}})
        if not choices:
            return None
        last = self._last or {}
        head = {k: last[k] for k in _CHUNK_HEAD if not chunk.get(k) and last.get(k)}
        return self.see({**chunk, **head, "choices": choices})

    def _index_calls(self, choice: Any, calls: list[Any]) -> None:
        """Give each tool-call delta its ``index`` when the upstream left it out (Gemini's OpenAI-compatible
        endpoint): one per call id, and a fragment without an id continues the last call. The OpenAI SDKs
        refuse a delta without one, and parallel calls would otherwise be joined into one."""
        if self._calls is None:
            self._calls = {}
        ids, last = self._calls.get(choice, ({}, 0))
        for call in calls:
            if not isinstance(call, dict):
                continue
            call_id = call.get("id")
            index = call.get("index")
            if not isinstance(index, int):
                if call_id and call_id not in ids:
                    index = max(ids.values(), default=-1) + 1
                else:
                    index = ids.get(call_id, last) if call_id else last
                call["index"] = index
            if call_id:
                ids.setdefault(call_id, index)
            last = index
        self._calls[choice] = (ids, last)

    def final(self) -> JSON | None:
        """The usage-only chunk to send last, if usage was moved."""
        if self._usage is None or self._last is None:
            return None
        last = self._last
        out: JSON = {k: last[k] for k in _CHUNK_HEAD if k in last}
        out["choices"] = []
        out["usage"] = self._usage
        return out


def _with_model(body: JSON, model: str) -> JSON:
    return body if body.get("model") == model else {**body, "model": model}


def _stream_flags(out: JSON, body: JSON, shaping: Shaping, stream: bool) -> JSON:
    if stream:
        if out.get("stream") is not True:
            out = _own(out, body)
            out["stream"] = True
        if not shaping.stream_options and "stream_options" in out:
            out = _own(out, body)
            del out["stream_options"]
    elif "stream" in out or "stream_options" in out:
        out = _own(out, body)
        out.pop("stream", None)
        out.pop("stream_options", None)
    return out


def _own(out: JSON, body: JSON) -> JSON:
    """Copy on first write: ``out`` may still be the caller's body."""
    return dict(body) if out is body else out
