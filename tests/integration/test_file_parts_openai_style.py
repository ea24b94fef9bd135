"""File and image parts on OpenAI-style deployments (OpenAI, Azure, compatible), with the official SDKs: an
OpenAI client's parts pass unchanged (an upload's file_id included); an Anthropic client's PDF and image inside
a tool_result reach the upstream in OpenAI's shape (a file part with a data URL and a filename, an image_url),
after the tool message, which takes text only. The fakes refuse any other shape, as the real API does. Azure's
chat completions take no file parts at all: a PDF sent to one is the client's 400 up front, in its format."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.integration.conftest import Upstreams
from tests.support.gateway import RunningGateway
from tests.support.media import b64, png

PDF = b64(b"%PDF-1.4 fake")
PNG = b64(png(4, 4))
MODELS = ["oai", "compat"]  # Azure's chat completions take no file parts: test_azure_refuses_file_parts_up_front


def fake(ups: Upstreams, model: str) -> Any:
    return {"oai": ups.openai, "az": ups.azure, "compat": ups.compat}[model]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", MODELS)
def test_an_openai_clients_file_parts_pass_unchanged(matrix_gateway: RunningGateway, ups: Upstreams, model: str,
                                                     stream: bool) -> None:
    client = openai.OpenAI(base_url=matrix_gateway.v1, api_key="k", max_retries=0)
    content: Any = [{"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "a.pdf"}},
                    {"type": "file", "file": {"file_id": "file-abc123"}},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
                    {"type": "text", "text": "Compare them."}]
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                            stream=stream)
    if stream:
        assert list(answer)  # type: ignore[arg-type]
    assert fake(ups, model).traffic.last.body["messages"][0]["content"] == content


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", MODELS)
def test_an_anthropic_clients_pdf_and_image_in_a_tool_result_reach_openai_shape(
    matrix_gateway: RunningGateway, ups: Upstreams, model: str, stream: bool
) -> None:
    client = anthropic.Anthropic(base_url=matrix_gateway.url, api_key="k", max_retries=0)
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}}
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1",
              "content": [{"type": "text", "text": "both"}, pdf, image]}
    use = {"type": "tool_use", "id": "toolu_1", "name": "fetch", "input": {}}
    messages: Any = [{"role": "user", "content": "Fetch them."}, {"role": "assistant", "content": [use]},
                     {"role": "user", "content": [result]}]
    tools: Any = [{"name": "fetch", "input_schema": {"type": "object"}}]
    if stream:
        with client.messages.stream(model=model, max_tokens=20, tools=tools, messages=messages) as events:
            events.get_final_message()
    else:
        client.messages.create(model=model, max_tokens=20, tools=tools, messages=messages)
    sent = fake(ups, model).traffic.last.body["messages"]
    assert sent[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "both"}
    assert sent[3] == {"role": "user", "content": [
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "document.pdf"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}


OPENAI_PDF: Any = {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "a.pdf"}}
ANTHROPIC_PDF: Any = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_azure_refuses_file_parts_up_front(matrix_gateway: RunningGateway, ups: Upstreams, stream: bool) -> None:
    oai = openai.OpenAI(base_url=matrix_gateway.v1, api_key="k", max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        answer = oai.chat.completions.create(model="az", stream=stream, messages=[
            {"role": "user", "content": [{"type": "text", "text": "Read it."}, OPENAI_PDF]}])
        list(answer)  # type: ignore[call-overload]
    assert refused.value.param == "messages[0].content[1]" and "Azure" in refused.value.message
    claude = anthropic.Anthropic(base_url=matrix_gateway.url, api_key="k", max_retries=0)
    messages: Any = [{"role": "user", "content": [{"type": "text", "text": "Read it."}, ANTHROPIC_PDF]}]
    with pytest.raises(anthropic.BadRequestError) as caught:
        if stream:
            with claude.messages.stream(model="az", max_tokens=20, messages=messages) as events:
                events.get_final_message()
        else:
            claude.messages.create(model="az", max_tokens=20, messages=messages)
    assert "messages.0.content.1" in caught.value.message and "Azure" in caught.value.message
    assert not ups.azure.traffic.log
