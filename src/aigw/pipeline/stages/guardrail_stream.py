"""Edit the text of a canonical chunk stream, piece by piece: what PII restore and output checks share.

Each piece of streamed text (a choice's content or refusal, a legacy completion's text,
one tool call's arguments, a custom tool call's free-text input) is a *slot* with its own
filter: ``feed(delta) -> text to send now`` and ``flush() -> what it held back``. A filter may hold text back
(a placeholder split across chunks, a window not yet checked) and may raise to
cut the stream. What a choice held back is sent in its finishing chunk, so the
client sees it before the finish reason. Chunks are copied only when a text in
them changed; a chunk left with nothing to send is dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, Protocol

from aigw.schema.openai import call_kind, with_call_text
from aigw.types import JSON

CONTENT = -1  # slot for a choice's content (or a legacy completion's text); >= 0: a tool call's index
REFUSAL = -2  # slot for a choice's refusal (plain text, like content)
Slot = tuple[int, int]  # (choice index, CONTENT, REFUSAL or tool call index)
# what a slot holds: text, a refusal, a function call's JSON arguments, or a custom tool call's free-text input
TextKind = Literal["content", "refusal", "arguments", "input"]
_TEXT_FIELDS = ((CONTENT, "content"), (REFUSAL, "refusal"))
_HEAD = ("id", "object", "created", "model", "system_fingerprint")


class TextFilter(Protocol):
    def feed(self, text: str) -> str: ...

    def flush(self) -> str: ...


class StreamEditor:
    """Applies one filter per slot to canonical chunks; ``make(slot, kind)`` may return None to leave a slot
    alone."""

    def __init__(self, make: Callable[[Slot, TextKind], TextFilter | None]) -> None:
        self._make = make
        self._filters: dict[Slot, TextFilter | None] = {}
        self._custom: set[Slot] = set()  # tool call slots holding a custom tool's input
        self._head: JSON = {}
        self._legacy = False  # a legacy completions stream ({"text": ...} choices)

    def _filter(self, slot: Slot) -> TextFilter | None:
        if slot not in self._filters:
            kind: TextKind = ("content" if slot[1] == CONTENT else "refusal" if slot[1] == REFUSAL
                              else "input" if slot in self._custom else "arguments")
            self._filters[slot] = self._make(slot, kind)
        return self._filters[slot]

    def _piece(self, n: int, text: str, slot: Slot) -> JSON:
        """Held-back text of tool call ``n``, as a delta of its own kind."""
        if slot in self._custom:
            return {"index": n, "custom": {"input": text}}
        return {"index": n, "function": {"arguments": text}}

    def chunk(self, chunk: JSON) -> JSON | None:
        """The chunk to send instead of ``chunk`` (the same object when nothing changed), or None."""
        choices = chunk.get("choices")
        if not choices:
            return chunk
        if not self._head:
            self._head = {k: chunk[k] for k in _HEAD if k in chunk}
        if len(choices) == 1:  # the common chunk: one choice, some content, nothing else
            choice = choices[0]
            delta = choice.get("delta")
            if (delta is not None and choice.get("finish_reason") is None and "tool_calls" not in delta
                    and "refusal" not in delta):
                return self._content_only(chunk, choice, delta)
        out: list[JSON] = []
        changed = False
        for choice in choices:
            new = self._choice(choice)
            changed = changed or new is not choice
            if new is not None:
                out.append(new)
        if not changed:
            return chunk
        if not out and not chunk.get("usage") and not chunk.get("_anthropic"):
            return None
        return {**chunk, "choices": out}

    def _content_only(self, chunk: JSON, choice: JSON, delta: JSON) -> JSON | None:
        content = delta.get("content")
        if not content or not isinstance(content, str):
            return chunk
        f = self._filter((int(choice.get("index", 0)), CONTENT))
        if f is None:
            return chunk
        text = f.feed(content)
        if text == content:
            return chunk
        if text or len(delta) > 1 or choice.get("logprobs"):
            return {**chunk, "choices": [{**choice, "delta": {**delta, "content": text}}]}
        if chunk.get("usage") or chunk.get("_anthropic"):
            return {**chunk, "choices": []}
        return None  # all of it held back: nothing to send yet

    def _choice(self, choice: JSON) -> JSON | None:
        i = int(choice.get("index", 0))
        finish = choice.get("finish_reason") is not None
        if "delta" not in choice:  # legacy completions: {"text": ...}
            text = choice.get("text")
            self._legacy = True
            if not isinstance(text, str):
                return choice
            new_text = self._run((i, CONTENT), text, finish)
            return choice if new_text is text else {**choice, "text": new_text}
        delta = choice.get("delta") or {}
        new_delta = self._delta(i, delta, finish)
        if new_delta is delta:
            return choice
        if (not finish and set(new_delta) <= {"content", "refusal"} and not new_delta.get("content")
                and not new_delta.get("refusal") and not choice.get("logprobs")):
            return None  # nothing left to send in this choice
        return {**choice, "delta": new_delta}

    def _delta(self, i: int, delta: JSON, finish: bool) -> JSON:
        out = delta
        for n, field in _TEXT_FIELDS:
            content = delta.get(field)
            if isinstance(content, str) or (finish and (i, n) in self._filters):
                text = content if isinstance(content, str) else ""
                new = self._run((i, n), text, finish)
                if new is not text or (new and content is None):
                    out = {**out, field: new}
        calls = delta.get("tool_calls")
        seen: set[int] = set()
        if isinstance(calls, list):
            new_calls = [self._call(i, c, finish, seen) for c in calls]
            if any(a is not b for a, b in zip(new_calls, calls, strict=True)):
                out = {**out, "tool_calls": new_calls}
        if finish:  # arguments still held for calls this finishing chunk does not mention
            rest = [self._piece(n, t, (c, n)) for (c, n), f in list(self._filters.items())
                    if c == i and n >= 0 and n not in seen and f is not None and (t := f.flush())]
            if rest:
                out = {**out, "tool_calls": [*(out.get("tool_calls") or ()), *rest]}
            self._drop(i)
        return out

    def _call(self, i: int, call: Any, finish: bool, seen: set[int]) -> Any:
        kind = call_kind(call)
        if kind is None:
            return call
        n = int(call.get("index", 0))
        seen.add(n)
        if kind == "custom":
            self._custom.add((i, n))
        text = call[kind]["arguments" if kind == "function" else "input"]
        new = self._run((i, n), text, finish)
        return call if new is text else with_call_text(call, new)

    def _run(self, slot: Slot, text: str, finish: bool) -> str:
        f = self._filter(slot)
        if f is None:
            return text
        out = f.feed(text) if text else ""
        if finish:
            out += f.flush()
        return text if out == text else out

    def _drop(self, i: int) -> None:
        for slot in [s for s in self._filters if s[0] == i]:
            self._filters[slot] = None  # finished: later text for this choice (none expected) passes as is

    def end(self) -> list[JSON]:
        """After the last chunk: whatever is still held (a stream that ended without a finish reason)."""
        out: list[JSON] = []
        for (i, n), f in list(self._filters.items()):
            text = f.flush() if f is not None else ""
            if not text:
                continue
            choice: JSON = {"index": i, "logprobs": None, "finish_reason": None}
            if self._legacy:
                choice["text"] = text
            else:
                choice["delta"] = {"content": text} if n == CONTENT else {"refusal": text} if n == REFUSAL else {
                    "tool_calls": [self._piece(n, text, (i, n))]}
            out.append({**self._head, "choices": [choice]})
        self._filters.clear()
        self._custom.clear()
        return out


async def edit_stream(chunks: AsyncIterator[JSON], editor: StreamEditor) -> AsyncIterator[JSON]:
    async for chunk in chunks:
        out = editor.chunk(chunk)
        if out is not None:
            yield out
    for extra in editor.end():
        yield extra
