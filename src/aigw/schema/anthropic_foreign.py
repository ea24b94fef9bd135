"""What of an Anthropic client's request an OpenAI-style upstream cannot take: refused before the call.

Pure checks on a canonical body that came in through ``POST /v1/messages`` (it carries ``_anthropic``),
called by the OpenAI-family adapters before ``strip_private``. A refusal is the client's 400 naming the
block as the client wrote it (``messages.0.content.1``), never an upstream's 400 passed on, never a part
silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aigw.errors import InvalidRequest
from aigw.schema.anthropic import PRIVATE_KEY
from aigw.schema.anthropic_blocks import ONLY_ANTHROPIC
from aigw.types import JSON

_OPENAI_TAKES = ("this model is served over the OpenAI API, which takes a PDF inline (a base64 document), "
                 "text as a text document and an image as base64 data or a URL")


def _marked(body: JSON) -> Iterator[tuple[JSON, JSON]]:
    """(part, its ``_anthropic``) for every content part that carries one."""
    for msg in body.get("messages") or ():
        content = msg.get("content") if isinstance(msg, dict) else None
        for part in content if isinstance(content, list) else ():
            private = part.get(PRIVATE_KEY) if isinstance(part, dict) else None
            if isinstance(private, dict):
                yield part, private


def _what(block: Any) -> str:
    source = block.get("source") if isinstance(block, dict) else None
    kind = source.get("type") if isinstance(source, dict) else None
    noun = "an image" if isinstance(block, dict) and block.get("type") == "image" else "a document"
    return f"{noun} by URL" if kind == "url" else f"{noun} of Anthropic's Files API (file_id)"


def refuse_anthropic_only(body: JSON) -> None:
    """Raise InvalidRequest for the first block only an Anthropic upstream can read (a PDF by URL, a file_id)."""
    for _, private in _marked(body):
        block = private.get(ONLY_ANTHROPIC)
        if isinstance(block, dict):
            param = str(private.get("param") or "messages")
            raise InvalidRequest(f"{param}: {_what(block)} can be read by Anthropic models only; {_OPENAI_TAKES}",
                                 param=param)
