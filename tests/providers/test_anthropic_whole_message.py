"""``message_events``: a whole Anthropic ``message`` (an upstream that ignored ``stream``) as the events its live
stream would have sent, so the stream translator gives the chunks a live stream gives: thinking with its
signature, text, tool calls with their input, the stop reason and the whole usage."""

from __future__ import annotations

from typing import Any

import orjson

from aigw.providers.anthropic.translate_stream import StreamTranslator, message_events
from aigw.schema.anthropic import PRIVATE_KEY, START_USAGE

MESSAGE: dict[str, Any] = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
    "content": [
        {"type": "thinking", "thinking": "the user wants weather", "signature": "sig=="},
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
    ],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 20, "cache_read_input_tokens": 5, "output_tokens": 7},
}


def _chunks(message: dict[str, Any]) -> list[dict[str, Any]]:
    translator = StreamTranslator("asked-model", 1)
    out = [c for name, data in message_events(message) for c in translator.feed(name, data)]
    assert translator.done
    return out


def test_a_whole_message_translates_as_its_live_stream_would() -> None:
    chunks = _chunks(MESSAGE)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["role"] == "assistant" and chunks[0]["id"] == "msg_1"
    assert chunks[0][PRIVATE_KEY][START_USAGE]["prompt_tokens"] == 25  # input known up front, for message_start
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "the user wants weather"
    assert [d[PRIVATE_KEY]["signature"] for d in deltas if PRIVATE_KEY in d] == ["sig=="]
    assert "".join(d.get("content") or "" for d in deltas) == "Let me look."
    calls = [t for d in deltas for t in d.get("tool_calls") or ()]
    assert calls[0]["id"] == "toolu_1" and calls[0]["function"]["name"] == "weather"
    assert orjson.loads("".join(t["function"]["arguments"] for t in calls)) == {"city": "Oslo"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    usage = chunks[-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["prompt_tokens_details"]["cached_tokens"]) \
        == (25, 7, 5)


def test_a_whole_message_without_usage_ends_without_a_usage_chunk() -> None:
    chunks = _chunks({**{k: v for k, v in MESSAGE.items() if k != "usage"}, "content": [{"type": "text", "text": "x"}],
                      "stop_reason": "end_turn"})
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "usage" not in chunks[-1]
