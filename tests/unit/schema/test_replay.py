"""A whole answer replayed as the chunks a live stream would have sent (``schema.replay``)."""

from __future__ import annotations

from typing import Any

import pytest

from aigw.schema.replay import replay_chunks


@pytest.mark.parametrize("index", [None, "0", 1.5, True])
@pytest.mark.parametrize("kind", ["chat.completion", "text_completion"])
def test_a_choice_whose_index_is_not_a_number_replays_as_choice_0(index: Any, kind: str) -> None:
    # an upstream that ignored stream=true sent its whole answer with an odd index: it is still streamed on
    choice: dict[str, Any] = {"index": index, "finish_reason": "stop"}
    choice.update({"message": {"role": "assistant", "content": "hi"}} if kind == "chat.completion"
                  else {"text": "hi"})
    chunks = replay_chunks({"id": "x", "object": kind, "created": 1, "model": "m", "choices": [choice]})
    assert chunks and all(c["choices"][0]["index"] == 0 for c in chunks if c.get("choices"))
    text = "".join(c["choices"][0].get("delta", {}).get("content") or c["choices"][0].get("text") or ""
                   for c in chunks if c.get("choices"))
    assert text == "hi"


@pytest.mark.parametrize("content", ["Sure.", None])
def test_logprobs_replay_once_with_the_first_text_content_or_refusal(content: str | None) -> None:
    """A refusal's logprobs come back with the refusal when there is no content (they were dropped); with content,
    once, on the content's chunk."""
    logprobs = {"content": [{"token": "Sure", "logprob": -0.1}] if content else None,
                "refusal": [{"token": "No", "logprob": -0.2}]}
    message = {"role": "assistant", "content": content, "refusal": "No."}
    chunks = replay_chunks({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                            "choices": [{"index": 0, "message": message, "logprobs": logprobs,
                                         "finish_reason": "stop"}]})
    carrying = [c["choices"][0]["delta"] for c in chunks if c["choices"][0]["logprobs"] is not None]
    assert carrying == [{"content": "Sure."} if content else {"refusal": "No."}]
