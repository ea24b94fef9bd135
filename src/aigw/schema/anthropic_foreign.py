"""What of an Anthropic client's request an OpenAI-style upstream cannot take: refused before the call, or
said another way.

Pure work on a canonical body that came in through ``POST /v1/messages`` (it carries ``_anthropic``), by
the OpenAI-family adapters before ``strip_private`` (``for_openai``). A refusal is the client's 400 naming
the block as the client wrote it (``messages.0.content.1``), never an upstream's 400 passed on, never a part
silently dropped:

* a PDF by URL, a file of Anthropic's Files API: refused (Chat Completions takes neither);
* a document asking for ``citations``: refused (no OpenAI-style model answers with cited passages);
* a document's ``title`` and ``context``, which Anthropic shows the model beside it: a text part before it.
"""

from __future__ import annotations

from typing import Any

from aigw.errors import InvalidRequest
from aigw.schema.anthropic import PRIVATE_KEY
from aigw.schema.anthropic_blocks import ONLY_ANTHROPIC
from aigw.types import JSON

_OPENAI_TAKES = ("this model is served over the OpenAI API, which takes a PDF inline (a base64 document), "
                 "text as a text document and an image as base64 data or a URL")


def _what(block: Any) -> str:
    source = block.get("source") if isinstance(block, dict) else None
    kind = source.get("type") if isinstance(source, dict) else None
    noun = "an image" if isinstance(block, dict) and block.get("type") == "image" else "a document"
    return f"{noun} by URL" if kind == "url" else f"{noun} of Anthropic's Files API (file_id)"


def for_openai(body: JSON) -> JSON:
    """``body`` with each document's title and context as text (a copy when any; ``body`` is never changed); the
    first part an OpenAI-style upstream cannot take (a block only Anthropic reads, a document asking for
    citations) is refused, in the same one walk over the parts."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    out: list[Any] | None = None
    for i, msg in enumerate(messages):
        content = msg.get("content") if isinstance(msg, dict) else None
        parts = _described(content) if isinstance(content, list) else content
        if parts is not content:
            out = list(messages) if out is None else out
            out[i] = {**msg, "content": parts}
    return body if out is None else {**body, "messages": out}


def _described(content: list[Any]) -> list[Any]:
    """Content parts with a text part before each document that has a title or a context (the same list when
    none has); a block only Anthropic reads (a PDF by URL, a file_id) or a document asking for citations is
    refused."""
    out: list[Any] = []
    for part in content:
        private = part.get(PRIVATE_KEY) if isinstance(part, dict) else None
        if isinstance(private, dict) and isinstance(block := private.get(ONLY_ANTHROPIC), dict):
            param = str(private.get("param") or "messages")
            raise InvalidRequest(f"{param}: {_what(block)} can be read by Anthropic models only; {_OPENAI_TAKES}",
                                 param=param)
        if isinstance(private, dict) and isinstance(document := private.get("document"), dict):
            citations = document.get("citations")
            if isinstance(citations, dict) and citations.get("enabled") is True:
                param = str(private.get("param") or "messages")
                raise InvalidRequest(f"{param}.citations: citations are answered by Anthropic models only; this "
                                     "model is served over the OpenAI API (send the document without them)",
                                     param=f"{param}.citations")
            lines = [f"{label}: {document[key]}" for key, label in (("title", "Title"), ("context", "Context"))
                     if isinstance(document.get(key), str) and document[key]]
            if lines:
                out.append({"type": "text", "text": "\n".join(lines)})
        out.append(part)
    return out if len(out) != len(content) else content
