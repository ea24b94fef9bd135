"""Anthropic SSE events -> canonical ``chat.completion.chunk`` dicts, as pure dict work.

Anthropic numbers content blocks across text, thinking and tool_use; OpenAI numbers
only tool calls. The translator keeps that mapping, turns ``input_json_delta``
fragments into tool-call argument fragments as they arrive (no buffering), and
ends with a usage chunk (empty ``choices``) because the accountant needs it; the
OpenAI renderer drops it when the client did not ask for usage. A stream whose
message_delta reported no output count ends without one, so the answer is counted
locally rather than charged as zero tokens (or message_start's placeholder 1).
``message_events`` turns a whole ``message`` (an upstream that ignored
``stream: true``) into the events a live stream would have sent, for the same
translator.
"""

from __future__ import annotations

from typing import Any

import orjson

from aigw.providers.anthropic.errors import map_stream_error
from aigw.providers.anthropic.translate_response import (
    FINISH_BY_STOP,
    private_response_fields,
    served_tier,
    to_canonical_usage,
)
from aigw.schema.anthropic import PRIVATE_KEY, START_USAGE
from aigw.types import JSON

_INPUT_COUNTS = frozenset({"input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"})


class StreamTranslator:
    """Feed it Anthropic events in order; it returns the canonical chunks each one yields."""

    __slots__ = (
        "_created",
        "_finish",
        "_id",
        "_model",
        "_no_args",
        "_output_counted",
        "_private",
        "_tool_index",
        "_usage",
        "done",
    )

    def __init__(self, model: str, created: int) -> None:
        self._id = "msg_unknown"
        self._model = model
        self._created = created
        self._usage: JSON = {}
        self._output_counted = False  # message_delta's usage gave output_tokens (message_start's is a placeholder)
        self._tool_index: dict[int, int] = {}  # anthropic block index -> openai tool_calls index
        self._no_args: set[int] = set()  # tool blocks (anthropic index) that have sent no argument fragment yet
        self._finish: str | None = None
        self._private: JSON = {}
        self.done = False

    def _chunk(self, delta: JSON, finish: str | None = None) -> JSON:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [choice],
        }

    def feed(self, event: str, data: dict[str, Any]) -> list[JSON]:
        """Translate one event; raises the mapped GatewayError on an ``error`` event."""
        if event == "content_block_delta":
            return self._block_delta(data)
        if event == "content_block_start":
            return self._block_start(data)
        if event == "message_start":
            return self._message_start(data)
        if event == "message_delta":
            return self._message_delta(data)
        if event == "content_block_stop":
            return self._block_stop(data) if self._no_args else []
        if event == "message_stop":
            return self._message_stop()
        if event == "error":
            raise map_stream_error(data)
        return []  # ping and event types added later

    def _message_start(self, data: JSON) -> list[JSON]:
        message = data.get("message") or {}
        self._id = message.get("id") or self._id
        self._model = message.get("model") or self._model
        usage = message.get("usage")
        first = self._chunk({"role": "assistant", "content": ""})
        if isinstance(usage, dict):
            self._usage.update(usage)
            # the input counts, known now: an Anthropic client's message_start carries them (stripped for others)
            first[PRIVATE_KEY] = {START_USAGE: to_canonical_usage(usage)}
        return [first]

    def _block_start(self, data: JSON) -> list[JSON]:
        block = data.get("content_block") or {}
        btype = block.get("type")
        if btype == "tool_use":
            tool_index = len(self._tool_index)
            self._tool_index[int(data.get("index", 0))] = tool_index
            self._no_args.add(int(data.get("index", 0)))
            call = {
                "index": tool_index,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        if btype == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if btype == "thinking" and block.get("thinking"):
            return [self._chunk({"reasoning_content": block["thinking"]})]
        if btype == "redacted_thinking":
            return [self._chunk({"_anthropic": {"redacted_thinking": block.get("data")}})]
        return []

    def _block_delta(self, data: JSON) -> list[JSON]:
        delta = data.get("delta") or {}
        dtype = delta.get("type")
        if dtype == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if dtype == "input_json_delta":
            fragment = delta.get("partial_json") or ""
            index = int(data.get("index", 0))
            tool_index = self._tool_index.get(index)
            if not fragment or tool_index is None:
                return []
            self._no_args.discard(index)
            return [self._chunk({"tool_calls": [{"index": tool_index, "function": {"arguments": fragment}}]})]
        if dtype == "thinking_delta":
            return [self._chunk({"reasoning_content": delta.get("thinking", "")})]
        if dtype == "signature_delta":
            return [self._chunk({"_anthropic": {"signature": delta.get("signature")}})]
        return []  # citations_delta and later delta types

    def _block_stop(self, data: JSON) -> list[JSON]:
        """A tool call without input streams one empty fragment (or none): its arguments are ``{}``, as in a
        whole answer, never "" (which no client can parse as JSON)."""
        index = int(data.get("index", 0))
        if index not in self._no_args:
            return []
        self._no_args.discard(index)
        call = {"index": self._tool_index[index], "function": {"arguments": "{}"}}
        return [self._chunk({"tool_calls": [call]})]

    def _message_delta(self, data: JSON) -> list[JSON]:
        """Record stop reason and usage; the finish chunk waits for message_stop, so a
        stream cut between the two never looks finished."""
        delta = data.get("delta") or {}
        usage = data.get("usage")
        if isinstance(usage, dict):
            self._usage.update({k: v for k, v in usage.items() if v is not None and not self._input_zeroed(k, v)})
            self._output_counted = self._output_counted or usage.get("output_tokens") is not None
        stop_reason = delta.get("stop_reason")
        if stop_reason:
            self._finish = FINISH_BY_STOP.get(stop_reason, "stop")
            self._private = private_response_fields(stop_reason, delta.get("stop_sequence"), [])
        return []

    def _input_zeroed(self, key: str, value: Any) -> bool:
        """A 0 in message_delta for an input count message_start gave: the counts are cumulative (Anthropic repeats
        them), so it is a compatible server's blank (SGLang sends 0 there), not a prompt of no tokens."""
        return key in _INPUT_COUNTS and value == 0 and bool(self._usage.get(key))

    def _message_stop(self) -> list[JSON]:
        self.done = True
        finish = self._chunk({}, self._finish or "stop")
        if self._private:
            finish["_anthropic"] = self._private
        if not self._output_counted:
            # none reported, or message_start's alone (a compatible server): its output_tokens is a placeholder, not
            # the count; no usage chunk, so the ledger bills the start's input and counts the output locally
            return [finish]
        final = self._chunk({})
        final["choices"] = []
        final["usage"] = to_canonical_usage(self._usage)
        final["service_tier"] = served_tier(self._usage)  # read beside the usage: the speed that prices it
        return [finish, final]


def message_events(message: JSON) -> list[tuple[str, JSON]]:
    """A whole Anthropic ``message`` as the events its live stream would have sent, in order: message_start
    (input usage), per block its start, delta and stop (thinking with its signature, tool input as one JSON
    fragment), message_delta (stop reason, whole usage), message_stop."""
    usage = message.get("usage") if isinstance(message.get("usage"), dict) else None
    head = {k: v for k, v in message.items() if k not in ("content", "usage", "stop_reason", "stop_sequence")}
    start: JSON = {**head, "content": [], "stop_reason": None, "stop_sequence": None}
    if usage is not None:
        start["usage"] = {**usage, "output_tokens": 0}
    events: list[tuple[str, JSON]] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message.get("content") or ()):
        if isinstance(block, dict):
            events.extend(_block_events(index, block))
    delta: JSON = {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")}
    end: JSON = {"type": "message_delta", "delta": delta}
    if usage is not None:
        end["usage"] = usage
    events += [("message_delta", end), ("message_stop", {"type": "message_stop"})]
    return events


def _block_events(index: int, block: JSON) -> list[tuple[str, JSON]]:
    btype = block.get("type")
    deltas: list[JSON] = []
    if btype == "text":
        opened: JSON = {"type": "text", "text": ""}
        deltas.append({"type": "text_delta", "text": block.get("text") or ""})
    elif btype == "tool_use":
        opened = {"type": "tool_use", "id": block.get("id"), "name": block.get("name"), "input": {}}
        deltas.append({"type": "input_json_delta", "partial_json": orjson.dumps(block.get("input") or {}).decode()})
    elif btype == "thinking":
        opened = {"type": "thinking", "thinking": "", "signature": ""}
        deltas.append({"type": "thinking_delta", "thinking": block.get("thinking") or ""})
        if block.get("signature"):
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
    else:  # redacted_thinking, and block types a stream sends whole
        opened = block
    events = [("content_block_start", {"type": "content_block_start", "index": index, "content_block": opened})]
    events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events
