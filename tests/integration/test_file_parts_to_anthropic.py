"""OpenAI clients' ``file`` and ``image_url`` parts, sent with the official SDK to an Anthropic deployment: each
reaches Anthropic as the block that holds it (a PDF a document, an image an image, plain text a text document),
or is refused up front with OpenAI's 400 naming the part, never Anthropic's 400 passed on. Streams the same."""

from __future__ import annotations

import base64
from typing import Any

import openai
import pytest

from tests.integration.conftest import Upstreams
from tests.support.gateway import RunningGateway
from tests.support.media import b64, png

PNG = b64(png(4, 4))
PDF = b64(b"%PDF-1.4 fake")


@pytest.fixture
def client(matrix_gateway: RunningGateway, ups: Upstreams) -> openai.OpenAI:
    return openai.OpenAI(base_url=matrix_gateway.v1, api_key="k", max_retries=0)


def ask(client: openai.OpenAI, part: dict[str, Any], stream: bool) -> None:
    content: Any = [part, {"type": "text", "text": "What is in it?"}]
    answer = client.chat.completions.create(model="claude", max_tokens=20, stream=stream,
                                            messages=[{"role": "user", "content": content}])
    if stream:
        assert list(answer)  # type: ignore[arg-type]


def file_part(media_type: str, data: str, name: str) -> dict[str, Any]:
    return {"type": "file", "file": {"file_data": f"data:{media_type};base64,{data}", "filename": name}}


CASES = [
    (file_part("application/pdf", PDF, "a.pdf"),
     {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}}),
    (file_part("image/png", PNG, "shot.png"),
     {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}),
    (file_part("text/plain", base64.b64encode("Ünïcode notes".encode()).decode(), "notes.txt"),
     {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Ünïcode notes"}}),
    ({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
     {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}),
    ({"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
     {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}),
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("part", "block"), CASES, ids=["pdf", "png-file", "text-file", "image-data", "image-url"])
def test_a_part_reaches_anthropic_as_its_block(client: openai.OpenAI, ups: Upstreams, part: dict[str, Any],
                                               block: dict[str, Any], stream: bool) -> None:
    ask(client, part, stream)
    assert ups.anthropic.traffic.last.body["messages"][0]["content"][0] == block


REFUSED = [
    file_part("application/zip", "UEsDBA==", "a.zip"),
    file_part("image/bmp", "Qk0=", "a.bmp"),
    {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}},
    {"type": "file", "file": {"file_id": "file-abc"}},
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("part", REFUSED, ids=["zip", "bmp-file", "bmp-image", "file-id"])
def test_a_part_anthropic_cannot_take_is_openais_400_up_front(client: openai.OpenAI, ups: Upstreams,
                                                              part: dict[str, Any], stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, part, stream)
    assert caught.value.param == "messages.0.content.0"  # the adapter's way of naming a part
    assert "anthropic" in caught.value.message.lower()
    assert not ups.anthropic.traffic.log  # refused before any upstream call
