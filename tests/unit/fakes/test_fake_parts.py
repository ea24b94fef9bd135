"""The fake upstreams refuse document, file and image parts the way the real APIs do, so a translation that
sends a wrong shape fails in tests, not in production."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes import anthropic_wire, openai_wire

PDF = "data:application/pdf;base64,JVBERi0x"


def chat(part: dict[str, Any], role: str = "user") -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": role, "content": [part]}]}


@pytest.mark.parametrize("part", [
    {"type": "file", "file": {"file_data": PDF, "filename": "a.pdf"}},
    {"type": "file", "file": {"file_id": "file-abc"}},
    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
])
def test_openai_takes_the_part_shapes_its_reference_lists(part: dict[str, Any]) -> None:
    assert openai_wire.validate_chat(chat(part)) == "gpt-4o-mini"


@pytest.mark.parametrize(("part", "code"), [
    ({"type": "file", "file": {"file_data": PDF}}, "missing_required_parameter"),  # inline data needs its name
    ({"type": "file", "file": {"filename": "a.pdf"}}, "missing_required_parameter"),
    ({"type": "file", "file": {"file_id": "file-abc", "filename": "a.pdf"}}, "mutually_exclusive_parameters"),
    ({"type": "file", "file": {"file_data": "JVBERi0x", "filename": "a.pdf"}}, "invalid_value"),  # not a data URL
    ({"type": "document", "source": {}}, "invalid_value"),
    ({"type": "image_url", "image_url": {}}, "missing_required_parameter"),
])
def test_openai_refuses_a_malformed_part(part: dict[str, Any], code: str) -> None:
    with pytest.raises(openai_wire.WireError) as caught:
        openai_wire.validate_chat(chat(part))
    assert caught.value.status == 400 and caught.value.body["error"]["code"] == code


def test_openai_tool_messages_take_text_parts_only() -> None:
    with pytest.raises(openai_wire.WireError):
        openai_wire.validate_chat(chat({"type": "image_url", "image_url": {"url": "https://x/a.png"}}, "tool"))


def messages(block: dict[str, Any]) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [block]}]}


@pytest.mark.parametrize("source", [
    {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
    {"type": "text", "media_type": "text/plain", "data": "hello"},
    {"type": "url", "url": "https://example.com/a.pdf"},
    {"type": "content", "content": [{"type": "text", "text": "hello"}]},
    {"type": "file", "file_id": "file_011"},
])
def test_anthropic_takes_every_document_source(source: dict[str, Any]) -> None:
    anthropic_wire.validate(messages({"type": "document", "source": source, "citations": {"enabled": True}}), {"m"})


@pytest.mark.parametrize("block", [
    {"type": "document", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},  # PDFs only
    {"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": "aGk="}},
    {"type": "document", "source": {"type": "text", "data": "hello"}},  # media_type is required
    {"type": "document", "source": {"type": "url"}},
    {"type": "document", "source": {"type": "file_url", "url": "https://x"}},
    {"type": "document", "source": {"type": "url", "url": "https://x"}, "citations": True},
    {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "Qk0="}},
])
def test_anthropic_refuses_a_malformed_document_or_image(block: dict[str, Any]) -> None:
    with pytest.raises(anthropic_wire.WireError) as caught:
        anthropic_wire.validate(messages(block), {"m"})
    assert caught.value.status == 400
