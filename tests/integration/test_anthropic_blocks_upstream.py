"""The anthropic SDK through the gateway: what each upstream receives of tool results, documents and caching."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.integration.conftest import Upstreams
from tests.support.gateway import RunningGateway
from tests.support.media import b64, png

CC = {"type": "ephemeral"}
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(png(8, 8))}}
USE = {"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}, "cache_control": CC}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
          "content": [{"type": "text", "text": "blurred"}, IMAGE]}
DOCUMENT = {"type": "document", "title": "Notes", "context": "from the wiki", "cache_control": CC,
            "source": {"type": "text", "media_type": "text/plain", "data": "The launch moved to May."}}
TOOL = {"name": "screenshot", "input_schema": {"type": "object"}}


def conversation() -> list[dict[str, Any]]:
    return [{"role": "user", "content": [DOCUMENT, {"type": "text", "text": "Take a screenshot."}]},
            {"role": "assistant", "content": [USE]},
            {"role": "user", "content": [RESULT, {"type": "text", "text": "Again?"}]}]


@pytest.fixture
def client(matrix_gateway: RunningGateway, ups: Upstreams) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=matrix_gateway.url, api_key="k", max_retries=0)


def test_an_anthropic_deployment_receives_the_blocks_as_sent(client: anthropic.Anthropic, ups: Upstreams) -> None:
    client.messages.create(model="claude", max_tokens=50, tools=[TOOL], messages=conversation())  # type: ignore[list-item,arg-type]
    assert ups.anthropic.traffic.last.body["messages"] == conversation()


def test_an_openai_compatible_deployment_gets_the_image_after_the_tool_message(
    client: anthropic.Anthropic, ups: Upstreams
) -> None:
    client.messages.create(model="compat", max_tokens=50, tools=[TOOL], messages=conversation())  # type: ignore[list-item,arg-type]
    sent = ups.compat.traffic.last.body["messages"]
    assert sent[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: blurred"}
    assert [p["type"] for p in sent[3]["content"]] == ["image_url", "text"]
    assert "_anthropic" not in str(sent) and "cache_control" not in str(sent)
