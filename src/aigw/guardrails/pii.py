"""PII and secret detection, typed redaction, and restoration of answers.

Regexes find candidates and checksums decide (Luhn for cards, mod 97 for
IBANs, range rules for SSNs, ``ipaddress`` for IPv6): that keeps precision up
without an NLP model. Every pattern is compiled once; cheap pre-filters (an
``@`` for emails, 13+ digits for cards, ...) skip patterns that cannot match,
so a 2 KB prompt costs tens of microseconds.

Redaction replaces each value with a typed placeholder (``<EMAIL_1>``), the
same value getting the same placeholder across one request, and returns the
placeholder -> original mapping so answers (plain or streamed) can be restored.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from aigw.errors import InvalidRequest
from aigw.guardrails.pii_entities import FINDERS, Match, TextScan, iban_ok, luhn_ok
from aigw.guardrails.verdict import Action, Verdict
from aigw.schema.openai import call_text, with_call_text

__all__ = [
    "BUILTIN_ENTITIES", "MODES", "PLACEHOLDER", "Match", "Messages", "PiiDetector", "Redactor", "StreamRestorer",
    "apply_pii_policy", "iban_ok", "luhn_ok", "map_message_texts", "pii_verdict", "restore",
]  # fmt: skip

BUILTIN_ENTITIES = ("email", "phone", "ssn", "credit_card", "iban", "ip", "secret")
MODES = ("off", "flag", "redact", "block")
_MODE_ACTION: dict[str, Action] = {"flag": "flag", "block": "block"}
# When two findings overlap, the higher priority wins (then the longer one).
_PRIORITY = {"secret": 7, "iban": 6, "credit_card": 5, "email": 4, "ssn": 3, "ip": 2, "phone": 1}
_CUSTOM_PRIORITY = 8
_KIND_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")

Messages = list[dict[str, Any]]

PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")


class PiiDetector:
    """Finds the configured entity kinds in text; built once per policy, reused per request."""

    def __init__(self, entities: Iterable[str] = BUILTIN_ENTITIES, custom: Mapping[str, str] | None = None):
        self.entities = tuple(entities)
        unknown = [e for e in self.entities if e not in BUILTIN_ENTITIES]
        if unknown:
            raise InvalidRequest(f"unknown PII entity {unknown[0]!r}", param="guardrails.pii.entities")
        self._custom: list[tuple[str, re.Pattern[str]]] = []
        for name, pattern in (custom or {}).items():
            param = f"guardrails.pii.custom.{name}"
            if not _KIND_NAME.fullmatch(name) or name in BUILTIN_ENTITIES:
                raise InvalidRequest("custom PII names are lowercase identifiers, not built-ins", param=param)
            try:
                self._custom.append((name, re.compile(pattern)))
            except re.error as exc:
                raise InvalidRequest(f"invalid regex: {exc}", param=param) from exc
        self.kinds = self.entities + tuple(name for name, _ in self._custom)
        self._finders = [FINDERS[e] for e in self.entities]

    def find(self, text: str) -> list[Match]:
        """Non-overlapping findings in text order."""
        if not text:
            return []
        found: list[Match] = []
        scan = TextScan(text)
        for finder in self._finders:
            finder(scan, found)
        for name, pattern in self._custom:
            found.extend(Match(name, m.start(), m.end(), m.group()) for m in pattern.finditer(text) if m.group())
        return _resolve(found)


def _resolve(found: list[Match]) -> list[Match]:
    """Drop overlaps: higher priority first, then longer; O(n log n) with a sorted list of kept spans."""
    if len(found) < 2:
        return found
    found.sort(key=lambda m: (-_PRIORITY.get(m.kind, _CUSTOM_PRIORITY), m.start - m.end, m.start))
    starts: list[int] = []
    kept: list[Match] = []
    for m in found:
        i = bisect.bisect_left(starts, m.start)
        if (i < len(kept) and kept[i].start < m.end) or (i > 0 and kept[i - 1].end > m.start):
            continue
        starts.insert(i, m.start)
        kept.insert(i, m)
    return kept


def map_message_texts(messages: Messages, fn: Callable[[str], str]) -> Messages:
    """Apply fn to every text of every message (content, text and refusal parts, an Anthropic document's
    title and context, a message's ``refusal``, tool-call arguments, custom tool inputs, a legacy
    ``function_call``'s arguments).

    Returns a new list; a message is copied only when one of its texts changed, so the
    input is never mutated and an unchanged request allocates almost nothing.
    """
    out: Messages = []
    for msg in messages:
        new = msg
        content = msg.get("content")
        if isinstance(content, str):
            text = fn(content)
            if text is not content:
                new = {**msg, "content": text}
        elif isinstance(content, list):
            parts = [_map_part(p, fn) for p in content]
            if any(a is not b for a, b in zip(parts, content, strict=True)):
                new = {**msg, "content": parts}
        calls = msg.get("tool_calls")
        if isinstance(calls, list):
            new_calls = [_map_call(c, fn) for c in calls]
            if any(a is not b for a, b in zip(new_calls, calls, strict=True)):
                new = {**new, "tool_calls": new_calls}
        legacy = msg.get("function_call")  # an assistant turn of the legacy ``functions`` API
        if isinstance(legacy, dict) and isinstance(args := legacy.get("arguments"), str) and (
                mapped := fn(args)) is not args:
            new = {**new, "function_call": {**legacy, "arguments": mapped}}
        if isinstance(refusal := msg.get("refusal"), str) and (mapped := fn(refusal)) is not refusal:
            new = {**new, "refusal": mapped}  # an assistant turn sent back as the SDK returned it
        out.append(new)
    return out


_PART_TEXT = {"text": "text", "refusal": "refusal"}  # part type -> the field holding its text


_DOCUMENT_TEXT = ("title", "context")  # an Anthropic document's fields that an Anthropic upstream reads too


def _map_part(part: Any, fn: Callable[[str], str]) -> Any:
    ptype = part.get("type") if isinstance(part, dict) else None
    field = _PART_TEXT.get(ptype) if isinstance(ptype, str) else None
    new = part
    if field is not None and isinstance(part.get(field), str):
        text = fn(part[field])
        if text is not part[field]:
            new = {**part, field: text}
    private = part.get("_anthropic") if ptype is not None else None
    document = private.get("document") if isinstance(private, dict) else None
    if isinstance(private, dict) and isinstance(document, dict):
        doc = document
        for name in _DOCUMENT_TEXT:
            if isinstance(value := doc.get(name), str) and (mapped := fn(value)) is not value:
                doc = {**doc, name: mapped}
        if doc is not document:
            new = {**new, "_anthropic": {**private, "document": doc}}
    return new


def _map_call(call: Any, fn: Callable[[str], str]) -> Any:
    """A function call's arguments or a custom tool call's input, through ``fn``."""
    text = call_text(call)
    if text is not None:
        new = fn(text)
        if new is not text:
            return with_call_text(call, new)
    return call


class Redactor:
    """Replaces findings with typed placeholders, consistently across one request.

    Make one per request: it accumulates the placeholder -> original ``mapping``
    (needed to restore the answer) and per-kind ``counts`` (for the verdict).
    """

    def __init__(self, detector: PiiDetector):
        self._detector = detector
        self.mapping: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self._by_value: dict[tuple[str, str], str] = {}
        self._next: dict[str, int] = {}

    def redact_text(self, text: str) -> str:
        matches = self._detector.find(text)
        if not matches:
            return text
        pieces: list[str] = []
        pos = 0
        for m in matches:
            pieces.append(text[pos : m.start])
            pieces.append(self._placeholder(m.kind, m.value))
            self.counts[m.kind] = self.counts.get(m.kind, 0) + 1
            pos = m.end
        pieces.append(text[pos:])
        return "".join(pieces)

    def redact_messages(self, messages: Messages) -> Messages:
        return map_message_texts(messages, self.redact_text)

    def _placeholder(self, kind: str, value: str) -> str:
        key = (kind, value)
        placeholder = self._by_value.get(key)
        if placeholder is None:
            n = self._next.get(kind, 0) + 1
            self._next[kind] = n
            placeholder = f"<{kind.upper()}_{n}>"
            self._by_value[key] = placeholder
            self.mapping[placeholder] = value
        return placeholder


def restore(text: str, mapping: Mapping[str, str]) -> str:
    """Put the originals back for the placeholders of this request; unknown ones stay as they are."""
    if not mapping or "<" not in text:
        return text
    return PLACEHOLDER.sub(lambda m: mapping.get(m.group(), m.group()), text)


def restore_json(text: str, mapping: Mapping[str, str]) -> str:
    """``restore`` for JSON text: each original goes in JSON-escaped, as it must inside a JSON string."""
    if not mapping or "<" not in text:
        return text
    return restore(text, {k: orjson.dumps(v).decode()[1:-1] for k, v in mapping.items()})


class StreamRestorer:
    """Restores placeholders in streamed deltas, even when one is split across chunks.

    It holds back only a tail that could still become a placeholder of this request
    (``<EMA`` when ``<EMAIL_1>`` exists), so the client sees text as soon as it can.
    Call ``flush()`` at the end of the stream to release whatever was held.
    """

    def __init__(self, mapping: Mapping[str, str]):
        self._mapping = dict(mapping)
        self._prefixes = {k[:i] for k in self._mapping for i in range(1, len(k))}
        self._max = max((len(k) for k in self._mapping), default=0)
        self._held = ""

    def feed(self, delta: str) -> str:
        if not self._mapping or (not self._held and "<" not in delta):
            return delta  # most deltas: nothing held, nothing that could start a placeholder
        buf = self._held + delta
        cut = buf.rfind("<", max(0, len(buf) - self._max))
        if cut >= 0 and buf[cut:] in self._prefixes:
            self._held = buf[cut:]
            buf = buf[:cut]
        else:
            self._held = ""
        return restore(buf, self._mapping)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


def pii_verdict(action: Action, counts: Mapping[str, int]) -> Verdict:
    """Kinds and counts only: the verdict is logged, the values must never be."""
    if not counts:
        return Verdict()
    kinds = sorted(counts)
    return Verdict(action, [f"pii:{k}" for k in kinds], {k: counts[k] for k in kinds}, 1.0)


def apply_pii_policy(messages: Messages, mode: str, detector: PiiDetector) -> tuple[Messages, Verdict, dict[str, str]]:
    """Run one PII mode over a request; the input messages are never mutated.

    off: untouched. flag: untouched, verdict "flag" with counts. redact: placeholders
    in a copy, verdict "redact", mapping for restoring. block: verdict "block" naming
    the kinds found (the stage turns it into a 400).
    """
    if mode not in MODES:
        raise InvalidRequest(f"unknown PII mode {mode!r}", param="guardrails.pii.mode")
    if mode == "off":
        return messages, Verdict(), {}
    redactor = Redactor(detector)
    if mode == "redact":
        redacted = redactor.redact_messages(messages)
        return redacted, pii_verdict("redact", redactor.counts), redactor.mapping
    counts: dict[str, int] = {}

    def count(text: str) -> str:
        for m in detector.find(text):
            counts[m.kind] = counts.get(m.kind, 0) + 1
        return text

    map_message_texts(messages, count)
    return messages, pii_verdict(_MODE_ACTION[mode], counts), {}
