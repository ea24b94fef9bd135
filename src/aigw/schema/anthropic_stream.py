"""Canonical ``chat.completion.chunk`` dicts -> Anthropic's SSE event sequence.

Anthropic clients expect, in this order: ``message_start``, ``ping``, then per
content block ``content_block_start`` / ``content_block_delta``... /
``content_block_stop``, then ``message_delta`` (stop_reason, usage) and
``message_stop``. Canonical streams report usage only in their last chunk, so
``message_delta`` is written by ``finish()``, called once the canonical stream
has ended with a finish_reason; if it breaks or ends without one (``upstream_finished``),
the caller sends ``error_frame(err)``.
"""

from __future__ import annotations

from typing import Any

import orjson

from aigw.errors import GatewayError
from aigw.schema.anthropic import (
    PRIVATE_KEY,
    START_USAGE,
    anthropic_usage,
    error_body,
    matched_stop,
    message_id,
    stop_reason,
)
from aigw.types import JSON

# Anthropic's documented keep-alive: "event streams may also include any number of ping events"
PING_FRAME = b'event: ping\ndata: {"type": "ping"}\n\n'


def frame(event: str, data: JSON) -> bytes:
    """One SSE frame: ``event: X`` + ``data: {json}`` + blank line."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class AnthropicStreamEncoder:
    """Stateful encoder for one response stream; ``model`` is the name the client sent."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._start_usage: JSON | None = None  # the input counts message_start carries, when known up front
        self._started = False
        self._finished = False
        self._next_index = 0
        self._open: tuple[str, int] | None = None  # (block kind, block index)
        self._tool_blocks: dict[int, int] = {}  # canonical tool_calls index -> block index
        self._finish_reason: Any = None
        self._private: JSON = {}
        self._usage: JSON | None = None

    # ------------------------------------------------------------ public

    def feed(self, chunk: JSON) -> bytes:
        """Encode one canonical chunk as zero or more SSE frames."""
        out: list[bytes] = []
        private = chunk.get(PRIVATE_KEY)
        if isinstance(private, dict) and START_USAGE in private:  # the first chunk's usage known up front
            private = {k: v for k, v in private.items() if k != START_USAGE}  # (a live upstream's message_start,
            if not self._started:  # or a cached answer's): message_start carries its input counts
                self._start_usage = anthropic_usage(chunk[PRIVATE_KEY][START_USAGE])
        if not self._started:
            self._start(chunk.get("id"), out)
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        if isinstance(private, dict):
            self._private.update(private)
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # Anthropic has one choice
            self._delta(choice.get("delta") or {}, out)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
                self._private = matched_stop(choice, self._private)
                self._close(out)
        return b"".join(out)

    @property
    def upstream_finished(self) -> bool:
        """Whether the canonical stream said how it ended (a finish_reason). Without one it was cut short:
        the caller sends ``error_frame``, never a clean end (with half a tool call's arguments, maybe)."""
        return self._finish_reason is not None

    def finish(self) -> bytes:
        """Close the message: message_delta (stop_reason, usage) and message_stop."""
        if self._finished:
            return b""
        out: list[bytes] = []
        if not self._started:
            self._start(None, out)
        self._close(out)
        self._finished = True
        usage = anthropic_usage(self._usage) if self._usage else {"output_tokens": 0}
        delta = {
            "stop_reason": stop_reason(self._finish_reason or "stop", self._private, bool(self._tool_blocks)),
            "stop_sequence": self._private.get("stop_sequence"),
        }
        out.append(frame("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(frame("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def error_frame(self, err: GatewayError) -> bytes:
        """An ``event: error`` frame for a failure after the stream has started."""
        self._finished = True
        _, inner = error_body(err)
        return frame("error", {"type": "error", "error": inner})

    # ------------------------------------------------------------ blocks

    def _start(self, chunk_id: Any, out: list[bytes]) -> None:
        self._started = True
        usage = {
            "input_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 0,
        }
        if self._start_usage is not None:  # input counts known up front; output comes in message_delta
            usage.update(self._start_usage, output_tokens=0)
        message: JSON = {
            "id": message_id(chunk_id),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        out.append(frame("message_start", {"type": "message_start", "message": message}))
        out.append(frame("ping", {"type": "ping"}))

    def _open_block(self, kind: str, block: JSON, out: list[bytes]) -> int:
        self._close(out)
        index = self._next_index
        self._next_index += 1
        self._open = (kind, index)
        out.append(
            frame("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        )
        return index

    def _ensure(self, kind: str, block: JSON, out: list[bytes]) -> int:
        if self._open is not None and self._open[0] == kind:
            return self._open[1]
        return self._open_block(kind, block, out)

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(frame("content_block_stop", {"type": "content_block_stop", "index": self._open[1]}))
            self._open = None

    def _emit(self, index: int, delta: JSON, out: list[bytes]) -> None:
        out.append(frame("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))

    def _delta(self, delta: JSON, out: list[bytes]) -> None:
        private = delta.get("_anthropic")
        if isinstance(private, dict):
            self._private_delta(private, out)
        thought = delta.get("reasoning_content")
        if thought:
            index = self._ensure("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
            self._emit(index, {"type": "thinking_delta", "thinking": thought}, out)
        text = delta.get("content") or delta.get("refusal")
        if text:
            index = self._ensure("text", {"type": "text", "text": ""}, out)
            self._emit(index, {"type": "text_delta", "text": text}, out)
        for call in delta.get("tool_calls") or ():
            self._tool_delta(call, out)

    def _private_delta(self, private: JSON, out: list[bytes]) -> None:
        """Thinking signatures and redacted thinking from an Anthropic upstream."""
        if private.get("signature") and self._open is not None and self._open[0] == "thinking":
            self._emit(self._open[1], {"type": "signature_delta", "signature": private["signature"]}, out)
        if private.get("redacted_thinking"):
            self._open_block("redacted", {"type": "redacted_thinking", "data": private["redacted_thinking"]}, out)
            self._close(out)

    def _tool_delta(self, call: JSON, out: list[bytes]) -> None:
        tool_index = int(call.get("index", 0))
        fn = call.get("function") or {}
        index = self._tool_blocks.get(tool_index)
        if index is None:
            tool_id = call.get("id") or f"toolu_{self._next_index}"
            block: JSON = {"type": "tool_use", "id": tool_id, "name": fn.get("name") or "", "input": {}}
            index = self._open_block("tool_use", block, out)
            self._tool_blocks[tool_index] = index
        arguments = fn.get("arguments")
        if arguments:
            # Fragments for an earlier (already stopped) tool block are still sent at its
            # index: the SDKs accumulate by index, and dropping them would lose arguments.
            self._emit(index, {"type": "input_json_delta", "partial_json": arguments}, out)
