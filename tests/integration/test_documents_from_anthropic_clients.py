"""Anthropic clients' documents and images, sent with the official SDK, on every kind of deployment: an
Anthropic deployment gets each block as the client sent it; an OpenAI-style one (OpenAI, Azure, compatible)
gets the OpenAI wire shape, or the client gets Anthropic's 400 naming the block before any upstream call,
never an upstream's 400 passed on or a part silently dropped. Streams the same."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.integration.conftest import Upstreams
from tests.support.gateway import RunningGateway

URL_PDF = {"type": "document", "source": {"type": "url", "url": "https://example.com/report.pdf"}}
FILE_PDF = {"type": "document", "source": {"type": "file", "file_id": "file_011CNha8iCJcU1wXNR6q4V8w"},
            "title": "Report", "cache_control": {"type": "ephemeral"}}
FILE_IMAGE = {"type": "image", "source": {"type": "file", "file_id": "file_011CPMxVD3fHLUhvTqtsQA5w"}}
ONLY_ANTHROPIC = [URL_PDF, FILE_PDF, FILE_IMAGE]
IDS = ["url-pdf", "file-pdf", "file-image"]
USE = {"type": "tool_use", "id": "toolu_1", "name": "fetch", "input": {}}
TOOL = {"name": "fetch", "input_schema": {"type": "object"}}


@pytest.fixture
def client(matrix_gateway: RunningGateway, ups: Upstreams) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=matrix_gateway.url, api_key="k", max_retries=0)


def ask(client: anthropic.Anthropic, model: str, messages: list[dict[str, Any]], stream: bool) -> None:
    if stream:
        with client.messages.stream(model=model, max_tokens=20, tools=[TOOL], messages=messages) as events:  # type: ignore[arg-type,list-item]
            events.get_final_message()
    else:
        client.messages.create(model=model, max_tokens=20, tools=[TOOL], messages=messages)  # type: ignore[arg-type,list-item]


def asking(block: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [block, {"type": "text", "text": "Summarise it."}]}]


def in_a_tool_result(block: dict[str, Any]) -> list[dict[str, Any]]:
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "got"}, block]}
    return [{"role": "user", "content": "Fetch it."}, {"role": "assistant", "content": [USE]},
            {"role": "user", "content": [result]}]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("block", ONLY_ANTHROPIC, ids=IDS)
def test_an_anthropic_deployment_gets_the_block_as_sent(client: anthropic.Anthropic, ups: Upstreams,
                                                        block: dict[str, Any], stream: bool) -> None:
    for messages in (asking(block), in_a_tool_result(block)):
        ask(client, "claude", messages, stream)
        assert ups.anthropic.traffic.last.body["messages"] == messages


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", ["oai", "az", "compat"])
@pytest.mark.parametrize("block", ONLY_ANTHROPIC, ids=IDS)
def test_an_openai_style_deployment_refuses_it_up_front(client: anthropic.Anthropic, ups: Upstreams, model: str,
                                                        block: dict[str, Any], stream: bool) -> None:
    for messages, at in ((asking(block), "messages.0.content.0"), (in_a_tool_result(block), "messages.2.content.0")):
        with pytest.raises(anthropic.BadRequestError) as caught:
            ask(client, model, messages, stream)
        assert caught.value.status_code == 400
        assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        assert at in caught.value.message and "Anthropic" in caught.value.message
    assert not (ups.openai.traffic.log or ups.azure.traffic.log or ups.compat.traffic.log)


PDF = "JVBERi0xLjQgZmFrZQ=="
NOTES = {"type": "document", "title": "Contract", "context": "Signed in 2024",
         "source": {"type": "text", "media_type": "text/plain", "data": "Payment is due in 30 days."}}
REPORT = {"type": "document", "title": "Contract", "context": "Signed in 2024",
          "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}}
SAID = {"type": "text", "text": "Title: Contract\nContext: Signed in 2024"}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", ["oai", "compat"])  # Azure takes no PDFs (file parts) in chat completions
@pytest.mark.parametrize(("block", "parts"), [
    (NOTES, [SAID, {"type": "text", "text": "Payment is due in 30 days."}]),
    (REPORT, [SAID, {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}",
                                              "filename": "Contract"}}]),
], ids=["text", "pdf"])
def test_a_documents_title_and_context_reach_an_openai_style_model(
    client: anthropic.Anthropic, ups: Upstreams, model: str, block: dict[str, Any], parts: list[Any], stream: bool
) -> None:
    ask(client, model, asking(block), stream)
    fake = {"oai": ups.openai, "az": ups.azure, "compat": ups.compat}[model]
    assert fake.traffic.last.body["messages"][0]["content"] == [*parts, {"type": "text", "text": "Summarise it."}]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", ["oai", "az", "compat"])
@pytest.mark.parametrize("block", [NOTES, REPORT], ids=["text", "pdf"])
def test_citations_asked_of_an_openai_style_model_are_refused_up_front(
    client: anthropic.Anthropic, ups: Upstreams, model: str, block: dict[str, Any], stream: bool
) -> None:
    for messages, at in ((asking({**block, "citations": {"enabled": True}}), "messages.0.content.0"),
                         (in_a_tool_result({**block, "citations": {"enabled": True}}), "messages.2.content.0")):
        with pytest.raises(anthropic.BadRequestError) as caught:
            ask(client, model, messages, stream)
        assert at in caught.value.message and "citations" in caught.value.message
    assert not (ups.openai.traffic.log or ups.azure.traffic.log or ups.compat.traffic.log)


def test_citations_turned_off_are_no_reason_to_refuse(client: anthropic.Anthropic, ups: Upstreams) -> None:
    ask(client, "oai", asking({**NOTES, "citations": {"enabled": False}}), False)
    assert ups.openai.traffic.last.body["messages"][0]["content"][0] == SAID


WRONG_TYPES = [
    {"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": "aGVsbG8="}},
    {"type": "document", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
    {"type": "document", "source": {"type": "text", "media_type": "text/html", "data": "<p>hi</p>"}},
    {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "Qk0="}},
    {"type": "image", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}},
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", ["claude", "oai", "az", "compat"])
@pytest.mark.parametrize("block", WRONG_TYPES, ids=["pdf-as-text", "pdf-as-png", "text-as-html", "bmp", "pdf-image"])
def test_a_media_type_anthropic_refuses_is_its_400_up_front_whichever_model_serves(
    client: anthropic.Anthropic, ups: Upstreams, model: str, block: dict[str, Any], stream: bool
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask(client, model, asking(block), stream)
    assert "messages.0.content.0.source.media_type" in caught.value.message
    assert not (ups.anthropic.traffic.log or ups.openai.traffic.log or ups.azure.traffic.log or ups.compat.traffic.log)
