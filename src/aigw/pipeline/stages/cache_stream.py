"""One stored shape for both kinds of answer: the canonical ``chat.completion``
(or ``text_completion`` for legacy /v1/completions).

A streamed answer is assembled into that shape once it has finished; a hit on a
streaming request is replayed from it by ``aigw.schema.replay.replay_chunks`` as a short,
well-formed chunk sequence, which each inbound API then writes as its own SSE.
Message fields with no rule here (annotations, audio, ...) are carried through both ways.
Answers we could not replay faithfully (Anthropic thinking signatures) are not stored at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aigw.schema.anthropic import START_USAGE
from aigw.schema.replay import KNOWN_FIELDS as _KNOWN
from aigw.types import JSON

STORABLE_FINISH = frozenset({"stop", "length", "tool_calls", "function_call"})
_PRIVATE = "_anthropic"
_TEXT = {"function": "arguments", "custom": "input"}  # where each kind of tool call keeps its text


@dataclass(slots=True)
class _Choice:
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: dict[int, JSON] = field(default_factory=dict)
    function_call: JSON | None = None  # legacy ``functions``: {"name", "arguments"}
    other: JSON | None = None  # fields of no kind above (annotations, audio, ...), joined as they came
    said_content: bool = False  # a delta carried content (even ""), so the message has some
    logprobs: JSON | None = None
    finish_reason: str | None = None


class StreamAssembler:
    """Feeds on canonical chunks as they pass; ``body()`` once the stream ended well.

    ``completion``: the chunks are legacy ``text_completion`` ones (``choices[].text``).
    """

    def __init__(self, completion: bool = False) -> None:
        self.completion = completion
        self.head: JSON = {}
        self.choices: dict[int, _Choice] = {}
        self.usage: JSON | None = None
        self.private: JSON = {}
        self.replayable = True

    def feed(self, chunk: JSON) -> None:
        if not self.head:
            self.head = {k: chunk[k] for k in ("id", "created", "model", "system_fingerprint") if k in chunk}
        if chunk.get("service_tier"):  # the tier that served it (the last chunk's counts), as a plain answer has it
            self.head["service_tier"] = chunk["service_tier"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        private = chunk.get(_PRIVATE)
        if isinstance(private, dict):
            self.private.update(private)
            self.private.pop(START_USAGE, None)  # the live stream's message_start counts: a hit has its usage
        for raw in chunk.get("choices") or ():
            c = self.choices.setdefault(int(raw.get("index", 0)), _Choice())
            if self.completion:
                if raw.get("text"):
                    c.content.append(raw["text"])
            else:
                self._delta(c, raw.get("delta") or {})
            if raw.get("logprobs"):
                c.logprobs = _merge_logprobs(c.logprobs, raw["logprobs"])
            if raw.get("finish_reason"):
                c.finish_reason = raw["finish_reason"]

    def _delta(self, c: _Choice, delta: JSON) -> None:
        if delta.get(_PRIVATE):
            self.replayable = False  # thinking signatures: cannot be rebuilt from a body
        content = delta.get("content")
        if content is not None:
            c.said_content = True
            if content:
                c.content.append(content)
        if delta.get("refusal"):
            c.refusal.append(delta["refusal"])
        if delta.get("reasoning_content"):
            c.reasoning.append(delta["reasoning_content"])
        for part in delta.get("tool_calls") or ():
            _call_delta(c.tool_calls, part)
        if fc := delta.get("function_call"):  # legacy functions: the name once, the arguments in pieces
            if c.function_call is None:
                c.function_call = {"name": "", "arguments": ""}
            if fc.get("name"):
                c.function_call["name"] = fc["name"]
            if fc.get("arguments"):
                c.function_call["arguments"] += fc["arguments"]
        for name in delta:  # a delta has a key or two: cheap
            if name not in _KNOWN and delta[name] is not None:
                other = c.other if c.other is not None else {}
                other[name] = _joined(other.get(name), delta[name])
                c.other = other

    def body(self) -> JSON | None:
        """The whole answer, or None if the stream did not end properly on every choice."""
        if not self.choices or not self.replayable:
            return None
        if any(c.finish_reason is None for c in self.choices.values()):
            return None
        if self.completion:
            out: JSON = {**self.head, "object": "text_completion", "choices": [
                {"index": i, "text": "".join(c.content), "logprobs": c.logprobs, "finish_reason": c.finish_reason}
                for i, c in sorted(self.choices.items())]}
        else:
            out = {**self.head, "object": "chat.completion", "choices": [
                _choice_body(i, c) for i, c in sorted(self.choices.items())
            ]}
        if self.usage is not None:
            out["usage"] = self.usage
        if self.private:
            out[_PRIVATE] = self.private
        return out


def _call_delta(calls: dict[int, JSON], part: JSON) -> None:
    """One streamed piece of a tool call, joined into its call: a function's name and arguments, or a custom
    tool's name and free-text input (its first piece says ``type: custom``; later ones carry ``custom``)."""
    n = int(part.get("index", 0))
    call = calls.get(n)
    if call is None:
        custom = part.get("type") == "custom" or (isinstance(part.get("custom"), dict) and "function" not in part)
        kind = "custom" if custom else "function"
        call = calls[n] = {"id": "", "type": kind, kind: {"name": "", _TEXT[kind]: ""}}
    kind = call["type"]
    text = _TEXT[kind]
    if part.get("id"):
        call["id"] = part["id"]
    piece = part.get(kind) or {}
    if piece.get("name"):
        call[kind]["name"] = piece["name"]
    if piece.get(text):
        call[kind][text] += piece[text]


def _merge_logprobs(old: JSON | None, new: JSON) -> JSON:
    if old is None:
        return {k: list(v) if isinstance(v, list) else v for k, v in new.items()}
    for k, v in new.items():
        if isinstance(v, list):
            have = old.get(k)
            if isinstance(have, list):
                have.extend(v)
            else:  # absent, or null in an earlier chunk (a server's role chunk): these tokens start the list
                old[k] = list(v)
    return old


def _joined(old: Any, new: Any) -> Any:
    """A field we do not know, joined over the deltas as OpenAI's SDK joins them: strings end to end,
    objects field by field, lists extended; otherwise, and for ``id``/``index``/``type``, the latest."""
    if isinstance(old, str) and isinstance(new, str):
        return old + new
    if isinstance(old, list) and isinstance(new, list):
        return old + new
    if isinstance(old, dict) and isinstance(new, dict):
        out = dict(old)
        for k, v in new.items():
            out[k] = v if k in ("id", "index", "type") else _joined(out.get(k), v)
        return out
    return new


def _choice_body(index: int, c: _Choice) -> JSON:
    if c.content:
        content: str | None = "".join(c.content)
    else:  # as a plain answer says it: null beside a refusal or a call, or when no delta had content
        content = "" if c.said_content and not (c.refusal or c.tool_calls or c.function_call) else None
    message: JSON = {"role": "assistant", "content": content}
    message["refusal"] = "".join(c.refusal) if c.refusal else None
    if c.reasoning:
        message["reasoning_content"] = "".join(c.reasoning)
    if c.tool_calls:
        message["tool_calls"] = [c.tool_calls[i] for i in sorted(c.tool_calls)]
    if c.function_call is not None:
        message["function_call"] = c.function_call
    if c.other:
        message.update(c.other)
    return {"index": index, "message": message, "logprobs": c.logprobs, "finish_reason": c.finish_reason}


def storable(body: JSON) -> bool:
    """Finished answers only: no content-filter stops, no thinking we cannot replay."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    private = body.get(_PRIVATE)
    if isinstance(private, dict) and private.get("thinking"):
        return False
    return all(isinstance(c, dict) and c.get("finish_reason") in STORABLE_FINISH for c in choices)


async def replay(chunks: list[JSON]) -> AsyncIterator[JSON]:
    for chunk in chunks:
        yield chunk
