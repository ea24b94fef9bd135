"""What one cache entry holds, as bytes: a small header line, then the answer's body as sent.

    {"v":2,"at":...,"model":...,"deployment":...,"usage":{...},"private":false,"ttl":...}\\n{...the body...}

The header carries all a hit needs for accounting (when, who first answered,
the usage to price as the saving), so a hit reads that line alone and can send
the body bytes untouched. Compact JSON never holds a raw newline, so the first
one ends the header. Entries written before this layout (one JSON object,
``{"body": ..., "at": ...}``) are still read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from aigw.accounting.tokens import LOCAL_COUNTER, answer_text
from aigw.types import JSON

PRIVATE = "_anthropic"  # gateway-internal fields of a canonical body (never sent to OpenAI clients)
VERSION = 2


@dataclass(slots=True)
class Entry:
    at: float
    model: str
    deployment: str
    usage: JSON | None
    private: bool  # the body holds gateway-internal fields: it must be decoded and rendered
    raw: bytes  # the body, serialized
    body: JSON | None = None  # decoded, when reading needed it anyway
    ttl: float | None = None  # seconds it was stored for (None in entries written before it was recorded)

    def expires_at(self) -> float | None:
        return self.at + self.ttl if self.ttl is not None else None


def encode(body: JSON, at: float, model: str, deployment: str, ttl: float | None = None,
           counted: JSON | None = None) -> bytes:
    """``counted``: usage counted here for an answer that reported none (the header's, the body unchanged)."""
    usage = body.get("usage")
    head = {"v": VERSION, "at": at, "model": model, "deployment": deployment,
            "usage": usage if isinstance(usage, dict) else counted, "private": PRIVATE in body}
    if ttl is not None:
        head["ttl"] = ttl
    return orjson.dumps(head) + b"\n" + orjson.dumps(body)


def decode(value: bytes) -> Entry | None:
    """The entry, or None when it cannot be read (then the caller treats it as a miss)."""
    cut = value.find(b"\n")
    try:
        if cut < 0:
            return _legacy(orjson.loads(value))
        head = orjson.loads(value[:cut])
        raw = value[cut + 1:]
        if raw[:1] != b"{" or raw[-1:] != b"}":
            return None
        usage = head["usage"]
        ttl = head.get("ttl")
        return Entry(float(head["at"]), head["model"], head["deployment"],
                     usage if isinstance(usage, dict) else None, head["private"] is not False, raw, None,
                     float(ttl) if ttl is not None else None)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def body_of(entry: Entry) -> JSON | None:
    """The entry's body as a new JSON object (the caller may change it), or None if it is not readable."""
    if entry.body is not None:
        return entry.body
    try:
        body = orjson.loads(entry.raw)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


class Decoded:
    """Entries already decoded, looked up by their stored bytes.

    The memory store hands back the same bytes object on every hit, whose hash
    Python keeps, so a repeated hit finds its entry in one dict lookup instead of
    decoding the header line and copying the body out again (~4 µs of a ~45 µs
    hit). Bytes from Redis are new on every read; they hash and compare in well
    under that. Bounded by the bytes it holds; cleared whole when full. Entries
    carrying a decoded body (the legacy layout) are not kept: a body is handed to
    stages that may change it, so it is never shared between requests.
    """

    def __init__(self, max_bytes: int = 8 * 1024 * 1024, max_entry_bytes: int = 64 * 1024) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self._entries: dict[bytes, Entry] = {}
        self._held = 0

    def __call__(self, value: bytes) -> Entry | None:
        entry = self._entries.get(value)
        if entry is not None:
            return entry
        entry = decode(value)
        if entry is not None and entry.body is None and len(value) <= self.max_entry_bytes:
            if self._held + len(value) > self.max_bytes:
                self._entries.clear()
                self._held = 0
            self._entries[value] = entry
            self._held += 2 * len(value)  # the key and the body copied out of it
        return entry


def _legacy(entry: Any) -> Entry | None:
    if not isinstance(entry, dict) or not isinstance(body := entry.get("body"), dict):
        return None
    usage = body.get("usage")
    return Entry(float(entry.get("at") or 0), str(entry.get("model") or ""), str(entry.get("deployment") or ""),
                 usage if isinstance(usage, dict) else None, PRIVATE in body, b"", body)


def counted_usage(request: JSON, answer: JSON) -> JSON:
    """Usage of an answer whose upstream reported none, counted locally, so that a hit on it prices the
    saving (an Ollama-like server streaming without ``stream_options``)."""
    text, thought = answer_text(answer)
    prompt, reasoning = LOCAL_COUNTER.count_prompt(request), LOCAL_COUNTER.count_text(thought)
    completion = LOCAL_COUNTER.count_text(text) + reasoning
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning}}
