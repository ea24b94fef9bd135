"""Document blocks: a PDF becomes a canonical file part, a text document text; prompt caching survives."""

from __future__ import annotations

from typing import Any

import pytest

from aigw.providers.anthropic.translate import to_anthropic_request
from aigw.schema.anthropic import messages_request_to_canonical, strip_private

CC = {"type": "ephemeral"}
PDF = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}
TEXT = {"type": "text", "media_type": "text/plain", "data": "The contract says 30 days."}


def asking(document: dict[str, Any]) -> dict[str, Any]:
    content = [document, {"type": "text", "text": "Summarise it."}]
    return {"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": content}]}


@pytest.mark.parametrize("source", [PDF, TEXT], ids=["pdf", "text"])
def test_a_cached_document_stays_a_cache_breakpoint_for_an_anthropic_upstream(source: dict[str, Any]) -> None:
    canonical = messages_request_to_canonical(asking({"type": "document", "source": source, "cache_control": CC}))
    sent = to_anthropic_request(canonical, "claude-x")["messages"][0]["content"][0]
    assert sent["cache_control"] == CC


@pytest.mark.parametrize("source", [PDF, TEXT], ids=["pdf", "text"])
def test_other_upstreams_get_no_cache_control_on_a_document(source: dict[str, Any]) -> None:
    canonical = messages_request_to_canonical(asking({"type": "document", "source": source, "cache_control": CC}))
    part = strip_private(canonical)["messages"][0]["content"][0]
    assert "cache_control" not in part and part["type"] in ("file", "text")


NAMED = {"title": "Contract", "context": "Signed in 2024", "citations": {"enabled": True}}


@pytest.mark.parametrize("source", [PDF, TEXT], ids=["pdf", "text"])
def test_an_anthropic_upstream_gets_the_document_as_the_client_sent_it(source: dict[str, Any]) -> None:
    document = {"type": "document", "source": source, **NAMED, "cache_control": CC}
    canonical = messages_request_to_canonical(asking(document))
    assert to_anthropic_request(canonical, "claude-x")["messages"][0]["content"][0] == document


def test_a_document_in_a_tool_result_keeps_its_fields_for_an_anthropic_upstream() -> None:
    pdf, text = ({"type": "document", "source": s, **NAMED} for s in (PDF, TEXT))
    result = {"type": "tool_result", "tool_use_id": "t", "content": [text, pdf]}
    use = {"type": "tool_use", "id": "t", "name": "fetch", "input": {}}
    request = asking(result)
    request["messages"] = [{"role": "user", "content": "get it"}, {"role": "assistant", "content": [use]},
                           {"role": "user", "content": [result]}]
    canonical = messages_request_to_canonical(request)
    assert to_anthropic_request(canonical, "claude-x")["messages"][2]["content"] == [result]
    assert "_anthropic" not in str(strip_private(canonical)["messages"])
