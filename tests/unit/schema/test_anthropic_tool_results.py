"""A ``tool_result`` with images or documents: canonical for OpenAI-shaped upstreams, intact for Anthropic."""

from __future__ import annotations

from typing import Any

from aigw.providers.anthropic.translate import to_anthropic_request
from aigw.schema.anthropic import messages_request_to_canonical, strip_private

CC = {"type": "ephemeral"}
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
PDF = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}
RESULT: dict[str, Any] = {
    "type": "tool_result",
    "tool_use_id": "toolu_1",
    "is_error": True,
    "content": [
        {"type": "text", "text": "the chart"},
        {"type": "image", "source": PNG},
        {"type": "text", "text": "and its data", "cache_control": CC},
        {"type": "document", "source": PDF},
    ],
}


def body(*user_blocks: dict[str, Any]) -> dict[str, Any]:
    use = {"type": "tool_use", "id": "toolu_1", "name": "chart", "input": {}}
    return {
        "model": "claude",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "draw it"},
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": list(user_blocks)},
        ],
    }


def test_an_anthropic_upstream_gets_the_tool_result_as_the_client_sent_it() -> None:
    canonical = messages_request_to_canonical(body(RESULT, {"type": "text", "text": "now?"}))
    sent = to_anthropic_request(canonical, "claude-x")["messages"][2]
    assert sent == {"role": "user", "content": [RESULT, {"type": "text", "text": "now?"}]}


def test_a_tool_result_of_only_an_image_stays_one_for_an_anthropic_upstream() -> None:
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "image", "source": PNG}]}
    canonical = messages_request_to_canonical(body(result))
    assert to_anthropic_request(canonical, "claude-x")["messages"][2] == {"role": "user", "content": [result]}


def test_other_upstreams_get_the_images_in_a_user_message_and_no_private_marks() -> None:
    canonical = messages_request_to_canonical(body(RESULT, {"type": "text", "text": "now?"}))
    tool, user = strip_private(canonical)["messages"][2:]
    assert tool == {"role": "tool", "tool_call_id": "toolu_1",
                    "content": [{"type": "text", "text": "Error: "}, {"type": "text", "text": "the chart"},
                                {"type": "text", "text": "and its data"}]}
    assert user["role"] == "user" and [p["type"] for p in user["content"]] == ["image_url", "file", "text"]
    assert all(set(p) == {"type", p["type"]} for p in user["content"])


def test_a_cache_breakpoint_on_a_tool_use_block_reaches_an_anthropic_upstream_only() -> None:
    marked = {"type": "tool_use", "id": "toolu_1", "name": "chart", "input": {}, "cache_control": CC}
    request = body({"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"})
    request["messages"][1]["content"] = [{"type": "text", "text": "drawing"}, marked]
    canonical = messages_request_to_canonical(request)
    assert to_anthropic_request(canonical, "claude-x")["messages"][1]["content"][1] == marked
    assert "cache_control" not in str(strip_private(canonical))
