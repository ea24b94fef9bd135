"""A stream event far longer than aiohttp's line buffer (a whole answer or a big tool call's arguments sent as one
``data:`` line, as servers that do not stream token by token do) reaches the client whole, on both inbound
APIs; before, the upstream read failed on any line over 128 KiB and the stream broke."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.integration.conftest import Upstreams
from tests.support.gateway import RunningGateway, running_gateway

MASTER = "mk-long-events"
WORD = "x" * 1_500_000  # one word: the fake streams it as one chunk, a ~1.5 MB data line (an image, say)


@pytest.fixture(scope="module")
def gw(upstreams: Upstreams) -> Iterator[RunningGateway]:
    model = {"name": "local", "provider": "openai_compatible", "model": "gpt-4o",
             "api_base": upstreams.compat.base_url}
    with running_gateway({"server": {"master_key": MASTER}, "models": [model], "tenancy": {"enabled": False}}) as g:
        yield g


def test_an_openai_client_gets_a_1_5_mb_event_whole(gw: RunningGateway) -> None:
    client = openai.OpenAI(base_url=gw.v1, api_key=MASTER, max_retries=0, timeout=20)
    stream = client.chat.completions.create(model="local", stream=True,
                                            messages=[{"role": "user", "content": WORD}])
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: " + WORD
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_an_anthropic_client_gets_a_1_5_mb_event_whole(gw: RunningGateway) -> None:
    client = anthropic.Anthropic(base_url=gw.url, api_key=MASTER, max_retries=0, timeout=20)
    with client.messages.stream(model="local", max_tokens=100_000,
                                messages=[{"role": "user", "content": WORD}]) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "Echo: " + WORD  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
