"""Prompt-injection scoring over user and tool-result text.

A heuristic scorer, not a classifier: weighted signals (instruction overrides,
jailbreak personas, system-prompt exfiltration, chat-template escapes,
instructions planted in tool output, encoded payloads, hidden unicode) are
combined as independent evidence, ``1 - prod(1 - w)``, so one strong signal
crosses a 0.8 threshold and weak ones need company.

Speed: each rule has literal anchors checked with ``in`` (a C substring scan)
before its regex runs, so ordinary text pays for ~40 substring scans and
almost no regex work. Deployments that want a model-based score plug in an
``InjectionClassifier`` (see below); the final score is the max of both.
"""

from __future__ import annotations

import base64
import binascii
import re
import string
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol

from aigw.guardrails.injection_rules import (
    ANCHOR_WORDS,
    GUARD_CHARS,
    META_WORDS,
    RULES,
    RULES_BY_FIRST_WORD,
    SUBS_BY_GUARD,
)
from aigw.guardrails.verdict import Verdict


class InjectionClassifier(Protocol):
    """Hook for a model-based injection classifier (e.g. a small ONNX model).

    ``score`` gets the user and tool-result texts of one request and returns a
    probability in [0, 1] that they carry an injection. It must be pure and
    thread-safe; the pipeline stage decides whether to call it inline or in an
    executor. ``name`` appears in verdict reasons (``injection:model:<name>``).
    """

    name: str

    def score(self, texts: Sequence[str]) -> float: ...


_PUNCT_TO_SPACE = str.maketrans({c: " " for c in string.punctuation})
_QUOTES = frozenset("'\"\u2018\u201c`")
_WHOLE_TEXT = 800  # texts up to this long are searched whole
_BEFORE, _AFTER = 120, 200  # window around an anchor, in characters
_MAX_ANCHOR_HITS = 64
_BLOB = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{20,}={0,2}")
_ROT13_MENTION = re.compile(r"rot-?\s?13")
_ROT13 = str.maketrans("abcdefghijklmnopqrstuvwxyz", "nopqrstuvwxyzabcdefghijklm")
_HIDDEN = re.compile("[\u200b\u2060\u180e\ufeff\u202a-\u202e\u2066-\u2069\U000e0000-\U000e007f]")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_ZERO_WIDTH = re.compile("[\u200b\u2060\u180e\ufeff]")
_TAGS = re.compile("[\U000e0000-\U000e007f]+")


class Signals:
    """Strongest weight per signal source; sources combine as independent evidence."""

    __slots__ = ("reasons", "weights")

    def __init__(self) -> None:
        self.weights: dict[str, float] = {}
        self.reasons: set[str] = set()

    def add(self, reason: str, weight: float, source: str = "") -> None:
        key = source or reason
        self.reasons.add(reason)
        if weight > self.weights.get(key, 0.0):
            self.weights[key] = weight

    def score(self) -> float:
        remaining = 1.0
        for w in self.weights.values():
            remaining *= 1.0 - w
        return 1.0 - remaining


def _search_near(regex: re.Pattern[str], low: str, anchors: list[str]) -> re.Match[str] | None:
    """Search only in windows around the anchors: a long benign text costs a few small searches."""
    if len(low) <= _WHOLE_TEXT:
        return regex.search(low)
    windows = []
    for anchor in anchors:
        pos, seen = low.find(anchor), 0
        while pos != -1 and seen < _MAX_ANCHOR_HITS:
            windows.append((max(0, pos - _BEFORE), pos + len(anchor) + _AFTER))
            pos, seen = low.find(anchor, pos + 1), seen + 1
    windows.sort()
    start, end = windows[0]
    for a, b in windows[1:]:
        if a > end:
            if m := regex.search(low, start, end):
                return m
            start = a
        end = max(end, b)
    return regex.search(low, start, end)


def _candidates(low: str, tokens: list[str]) -> dict[int, list[str]]:
    """Rules worth running, each with the anchors to centre its search on."""
    present = ANCHOR_WORDS.intersection(tokens)
    found: dict[int, list[str]] = {}
    for word in present:
        for i in RULES_BY_FIRST_WORD.get(word, ()):
            found.setdefault(i, []).append(word)
    for i in list(found):
        if any(group.isdisjoint(present) for group in RULES[i].groups[1:]):
            del found[i]
    for guard in GUARD_CHARS:
        if guard in low:
            for i, sub in SUBS_BY_GUARD[guard]:
                if sub in low:
                    found.setdefault(i, []).append(sub)
    return found


def _match_rules(low: str, tokens: list[str], signals: Signals) -> None:
    meta: bool | None = None
    for i, anchors in _candidates(low, tokens).items():
        rule = RULES[i]
        if (m := _search_near(rule.regex, low, anchors)) is None:
            continue
        weight = rule.weight
        if rule.quotable and low[max(0, m.start() - 2) : m.start()].strip()[-1:] in _QUOTES:
            if meta is None:
                meta = not META_WORDS.isdisjoint(tokens)
            if meta:
                weight = 0.4  # quoted in a text about injection: discussion, not an attack
        signals.add(f"injection:{rule.category}", weight, f"rule{i}")


def _inner_score(text: str) -> float:
    inner = Signals()
    low = text.lower()
    _match_rules(low, low.translate(_PUNCT_TO_SPACE).split(), inner)
    return inner.score()


def _decode_blob(blob: str) -> str | None:
    """Hex or base64 blob -> text, or None when it is not mostly printable text."""
    try:
        if len(blob) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in blob):
            raw = bytes.fromhex(blob)
        else:
            raw = base64.b64decode(blob + "=" * (-len(blob) % 4))
        text = raw.decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    printable = sum(c.isprintable() or c.isspace() for c in text)
    return text if text and printable >= 0.9 * len(text) else None


def _check_encoded(text: str, low: str, tokens: list[str], signals: Signals) -> None:
    if "rot" in low and _ROT13_MENTION.search(low):
        inner = _inner_score(low.translate(_ROT13))
        if inner >= 0.5:
            signals.add("injection:encoded", max(inner, 0.85))
    if max(map(len, tokens), default=0) < 12:
        return  # no run long enough to be (part of) a base64 or hex payload
    for m in _BLOB.finditer(text):
        decoded = _decode_blob(m.group())
        if decoded is not None:
            inner = _inner_score(decoded)
            if inner >= 0.5:
                signals.add("injection:encoded", max(inner, 0.85))


def _check_hidden(text: str, signals: Signals) -> str:
    """Score hidden characters and return the text without them (NFKC-folded)."""
    for m in _TAGS.finditer(text):
        hidden = "".join(chr(ord(c) - 0xE0000) for c in m.group() if 0xE0020 <= ord(c) <= 0xE007E)
        if len(hidden) > 6 or not hidden.isalpha():  # short lowercase runs are emoji flag tags
            signals.add("injection:hidden_unicode", max(0.9, _inner_score(hidden)))
    if "\u202d" in text or "\u202e" in text:  # explicit overrides reorder what a reviewer sees
        signals.add("injection:hidden_unicode", 0.85)
    elif _BIDI.search(text):
        signals.add("injection:hidden_unicode", 0.5)
    zero_width = len(_ZERO_WIDTH.findall(text, 1))
    if zero_width:
        signals.add("injection:hidden_unicode", 0.6 if zero_width >= 3 else 0.3)
    return unicodedata.normalize("NFKC", _HIDDEN.sub("", text))


def score_text(text: str) -> tuple[float, list[str]]:
    """Heuristic injection score of one text, with the reasons that fired."""
    signals = Signals()
    if not text.isascii():
        text = _check_hidden(text, signals)
    low = text.lower()
    tokens = low.translate(_PUNCT_TO_SPACE).split()
    _match_rules(low, tokens, signals)
    _check_encoded(text, low, tokens, signals)
    return signals.score(), sorted(signals.reasons)


def injection_texts(messages: Iterable[dict[str, Any]]) -> list[str]:
    """The texts an attacker controls: user messages and tool (or function) results (an Anthropic document's
    title and context included)."""
    texts: list[str] = []
    for msg in messages:
        if msg.get("role") not in ("user", "tool", "function"):
            continue
        content = msg.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for p in content:
                if not isinstance(p, dict):
                    continue
                if p.get("type") == "text" and isinstance(p.get("text"), str):
                    texts.append(p["text"])
                if "_anthropic" in p:
                    texts.extend(_document_texts(p["_anthropic"]))
    return texts


def _document_texts(private: Any) -> list[str]:
    """An Anthropic document's title and context: the model reads them beside the document's text."""
    doc = private.get("document") if isinstance(private, dict) else None
    if not isinstance(doc, dict):
        return []
    return [v for k in ("title", "context") if isinstance(v := doc.get(k), str) and v]


def check_injection(
    messages: Iterable[dict[str, Any]],
    threshold: float,
    *,
    mode: Literal["flag", "block"] = "block",
    classifier: InjectionClassifier | None = None,
) -> Verdict:
    """Score a request; above ``threshold`` the verdict is ``mode`` (flag or block), else pass."""
    texts = injection_texts(messages)
    score = 0.0
    reasons: set[str] = set()
    for text in texts:
        s, why = score_text(text)
        score = max(score, s)
        reasons.update(why)
    if classifier is not None and texts:
        model_score = min(1.0, max(0.0, float(classifier.score(texts))))
        if model_score >= threshold:
            reasons.add(f"injection:model:{classifier.name}")
        score = max(score, model_score)
    if score < threshold:
        return Verdict("pass", sorted(reasons), {}, score)
    return Verdict(mode, sorted(reasons), {"injection": 1}, score)
