"""Checks on the answer before the client sees it: leakage, content filter, JSON format.

Leakage and content checks are local (a match spans at most a few hundred
characters), so ``StreamGuard`` can run them on a sliding window as a stream
flows and say when to cut. JSON format needs the whole answer: validate it
after the stream is buffered (see ``jsonschema_lite`` for the schema subset).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from aigw.errors import InvalidRequest
from aigw.guardrails.jsonschema_lite import SchemaValidator
from aigw.guardrails.verdict import Action, Verdict

_WORD = re.compile(r"\w+")


class TextCheck(Protocol):
    """Anything that judges a piece of answer text; ``StreamGuard`` runs these on a window."""

    def check(self, text: str) -> Verdict: ...


def _verdict(action: Action, counts: dict[str, int]) -> Verdict:
    if not counts:
        return Verdict()
    return Verdict(action, sorted(counts), counts, 1.0)


def _literal_alternation(values: Iterable[str], min_len: int) -> re.Pattern[str] | None:
    """One regex for many literal strings, longest first so overlapping values match whole."""
    unique = sorted({v for v in values if len(v) >= min_len}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, unique))) if unique else None


class LeakageCheck:
    """Finds what must not come back: redacted originals, the system prompt, canary strings.

    Run it on the upstream answer *before* placeholders are restored: the model never
    saw the originals, so an original in its answer came from somewhere it should not.
    The system prompt counts as echoed when ``min_words`` consecutive words of it
    appear verbatim (case and punctuation ignored).
    """

    def __init__(
        self,
        *,
        redacted_values: Iterable[str] = (),
        system_prompt: str | None = None,
        canaries: Iterable[str] = (),
        min_words: int = 12,
        action: Action = "block",
    ):
        self.action: Action = action
        self.min_words = min_words
        self._values = _literal_alternation(redacted_values, 4)
        self._canaries = _literal_alternation(canaries, 1)
        words = [w.lower() for w in _WORD.findall(system_prompt or "")]
        self._shingles = {tuple(words[i : i + min_words]) for i in range(len(words) - min_words + 1)}
        # A prompt shorter than min_words is matched whole, if it is long enough to mean something.
        self._short_prompt = " ".join(words) if len(words) < min_words and len(" ".join(words)) >= 40 else None

    @property
    def window(self) -> int:
        """Characters of overlap a streaming check needs to see a leak split across chunks."""
        return max(256, self.min_words * 24)

    def check(self, text: str) -> Verdict:
        counts: dict[str, int] = {}
        if self._values is not None and (n := len(self._values.findall(text))):
            counts["leak:pii"] = n
        if self._canaries is not None and (n := len(self._canaries.findall(text))):
            counts["leak:canary"] = n
        if (self._shingles or self._short_prompt) and self._echoes_prompt(text):
            counts["leak:system_prompt"] = 1
        return _verdict(self.action, counts)

    def _echoes_prompt(self, text: str) -> bool:
        words = [w.lower() for w in _WORD.findall(text)]
        if self._short_prompt is not None:
            return self._short_prompt in " ".join(words)
        n = self.min_words
        return any(tuple(words[i : i + n]) in self._shingles for i in range(len(words) - n + 1))


class ContentFilter:
    """Word and regex lists grouped in categories; a hit names the category, never the text.

    Words match whole words, case-insensitively (a phrase matches across any whitespace).
    """

    def __init__(self, categories: Mapping[str, Mapping[str, Sequence[str]]], *, action: Action = "block"):
        self.action: Action = action
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        for name, spec in categories.items():
            param = f"guardrails.output.categories.{name}"
            unknown = sorted(set(spec) - {"words", "regex"})
            if unknown:
                raise InvalidRequest(f"unknown key {unknown[0]!r}", param=f"{param}.{unknown[0]}")
            alternatives = [
                r"(?<!\w)" + r"\s+".join(map(re.escape, w.split())) + r"(?!\w)" for w in spec.get("words", ())
            ]
            alternatives += list(spec.get("regex", ()))
            if not alternatives:
                continue
            try:
                self._patterns.append((name, re.compile("|".join(f"(?:{a})" for a in alternatives), re.IGNORECASE)))
            except re.error as exc:
                raise InvalidRequest(f"invalid regex: {exc}", param=f"{param}.regex") from exc

    @classmethod
    def from_config(cls, output: Mapping[str, Any], *, action: Action = "block") -> ContentFilter:
        """``blocklist: [words]`` becomes the "blocklist" category beside ``categories: {name: {words, regex}}``."""
        categories: dict[str, Mapping[str, Sequence[str]]] = dict(output.get("categories") or {})
        if output.get("blocklist"):
            categories["blocklist"] = {"words": list(output["blocklist"])}
        return cls(categories, action=action)

    def check(self, text: str) -> Verdict:
        counts = {}
        for name, pattern in self._patterns:
            if n := len(pattern.findall(text)):
                counts[f"content:{name}"] = n
        return _verdict(self.action, counts)


def json_format_errors(text: str, response_format: Mapping[str, Any] | None) -> list[str]:
    """Why ``text`` does not satisfy the request's ``response_format`` (empty when it does).

    Messages name JSON paths and expectations, never the answer's values.
    """
    kind = (response_format or {}).get("type")
    if kind not in ("json_object", "json_schema"):
        return []
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return ["$: the answer is not valid JSON"]
    if kind == "json_object":
        return [] if isinstance(value, dict) else ["$: expected a JSON object"]
    spec = (response_format or {}).get("json_schema") or {}
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        return []  # nothing to validate against; the upstream accepted the request as is
    return SchemaValidator(schema).errors(value)


def check_json_format(text: str, response_format: Mapping[str, Any] | None, *, action: Action = "block") -> Verdict:
    errors = json_format_errors(text, response_format)
    if not errors:
        return Verdict()
    reason = "format:invalid_json" if errors[0].endswith("not valid JSON") else "format:schema"
    return Verdict(action, [reason], {reason: len(errors)}, 1.0)


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"


def _word_start(text: str) -> int:
    """Where the word ``text`` starts inside ends (0 when it starts with no word character)."""
    i = 0
    while i < len(text) and _is_word(text[i]):
        i += 1
    return i


def _word_end(text: str) -> int:
    """Where the word ``text`` ends inside starts (``len(text)`` when it ends with no word character)."""
    i = len(text)
    while i and _is_word(text[i - 1]):
        i -= 1
    return i


@dataclass(slots=True)
class StreamDecision:
    """What to do with a stream after a delta: send ``emit``; if ``cut``, stop and send an error event."""

    emit: str
    cut: bool
    verdict: Verdict


class StreamGuard:
    """Runs text checks on a stream as it flows (``flow``) or on the whole answer (``buffer``).

    In flow mode each delta is checked together with the last ``window`` characters,
    so a match split across chunks is still seen, and every check costs O(window +
    delta) rather than O(answer). ``holdback`` characters are kept back until the
    next delta: with holdback >= the longest match, the offending text never
    reaches the client; with 0, the stream is cut right after the chunk that
    completed it. Buffer mode emits nothing until ``finish()``.
    """

    def __init__(
        self,
        checks: Sequence[TextCheck],
        *,
        mode: Literal["flow", "buffer"] = "flow",
        window: int = 256,
        holdback: int = 0,
    ):
        self._checks = list(checks)
        self._mode = mode
        self._window = window
        self._holdback = holdback
        self._tail = ""  # already checked text kept for overlap
        self._pending = ""  # checked, not yet emitted
        self._buffer: list[str] = []
        self._unsettled = False  # the text ends inside a word whose match the next delta decides
        self.cut = False

    def _run(self, text: str) -> Verdict:
        verdict = Verdict()
        for check in self._checks:
            verdict = verdict.merge(check.check(text))
        return verdict

    def feed(self, delta: str) -> StreamDecision:
        if self.cut:
            return StreamDecision("", True, Verdict())
        if self._mode == "buffer":
            self._buffer.append(delta)
            return StreamDecision("", False, Verdict())
        text = self._tail + delta
        verdict = self._run(text)
        hold, open_end = self._holdback, False
        if verdict.blocked:
            verdict, open_end = self._settle(text, len(self._tail) >= self._window)
            if verdict.blocked:
                self.cut = True
                self._pending = ""
                return StreamDecision("", True, verdict)
            if open_end:  # decided by the next delta (or the end): the unfinished word waits
                hold = max(hold, len(text) - _word_end(text))
        self._unsettled = open_end
        self._tail = text[-self._window :]
        ready = self._pending + delta
        split = max(0, len(ready) - hold)
        self._pending = ready[split:]
        return StreamDecision(ready[:split], False, verdict)

    def _settle(self, text: str, truncated: bool, closed: bool = False) -> tuple[Verdict, bool]:
        """A blocking match in ``text`` judged as the whole answer would judge it: not one that starts inside a
        word the window cut (that word was checked whole before), nor yet one that a longer word could undo
        (``kill`` + ``er``; whole-word lists, ``\\b`` regexes) unless the answer has ended (``closed``).
        Returns the verdict and whether the text's end is still open (the next delta or the end decides)."""
        if truncated and (lead := _word_start(text)):
            text = text[lead:]
            verdict = self._run(text)
            if not verdict.blocked:
                return verdict, False
        if closed or _word_end(text) == len(text) or self._run(text + "x").blocked:
            return self._run(text), False
        return Verdict(), True

    def finish(self) -> StreamDecision:
        """End of stream: release what was held, or (buffer mode) check the whole answer."""
        if self.cut:
            return StreamDecision("", True, Verdict())
        if self._mode == "buffer":
            text = "".join(self._buffer)
            verdict = self._run(text)
            self.cut = verdict.blocked
            return StreamDecision("" if self.cut else text, self.cut, verdict)
        if self._unsettled:  # the answer ended on the word that was waiting: judge it now
            verdict, _ = self._settle(self._tail, len(self._tail) >= self._window, closed=True)
            if verdict.blocked:
                self.cut = True
                self._pending = ""
                return StreamDecision("", True, verdict)
        rest, self._pending = self._pending, ""
        return StreamDecision(rest, False, Verdict())
