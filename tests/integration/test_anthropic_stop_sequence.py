"""An Anthropic client's stop_sequences answered by an OpenAI-compatible server that names the stop string it
matched (vLLM's ``choices[].stop_reason``): the official SDK sees ``stop_reason: stop_sequence`` and the
sequence, in a message and at the end of a stream; an answer that ended on its own stays ``end_turn``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.fakes.openai_upstream import FakeOpenAI
from tests.support.gateway import RunningGateway, running_gateway

MASTER = "mk-stop-seq"


class FakeVllm(FakeOpenAI):
    """Names the first stop string asked for as the one it stopped at (vLLM's extra field)."""

    name = "fake-vllm"

    def resolve(self, request: Any, body: Any) -> Any:
        self.asked_stop = (body.get("stop") or [None])[0] if isinstance(body, dict) else None
        return body

    def decorate(self, op: str, result: Any, stream: bool) -> Any:
        for part in result if stream else [result]:
            for choice in part.get("choices") or ():
                if choice.get("finish_reason"):
                    choice["stop_reason"] = self.asked_stop
        return result


@pytest.fixture(scope="module")
def gw() -> Iterator[RunningGateway]:
    fake = FakeVllm(None).start()
    model = {"name": "local", "provider": "openai_compatible", "model": "gpt-4o", "api_base": fake.base_url}
    try:
        with running_gateway({"server": {"master_key": MASTER}, "models": [model],
                              "tenancy": {"enabled": False}}) as g:
            yield g
    finally:
        fake.stop()


def _client(gw: RunningGateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=MASTER, max_retries=0, timeout=10)


def test_a_matched_stop_string_is_a_stop_sequence_in_a_message_and_a_stream(gw: RunningGateway) -> None:
    ask: dict[str, Any] = {"model": "local", "max_tokens": 50, "stop_sequences": ["END"],
                           "messages": [{"role": "user", "content": "count to ten"}]}
    msg = _client(gw).messages.create(**ask)
    assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", "END")
    with _client(gw).messages.stream(**ask) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "END")


def test_an_answer_that_ended_on_its_own_is_an_end_turn(gw: RunningGateway) -> None:
    msg = _client(gw).messages.create(model="local", max_tokens=50,
                                      messages=[{"role": "user", "content": "count to ten"}])
    assert (msg.stop_reason, msg.stop_sequence) == ("end_turn", None)
