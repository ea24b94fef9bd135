"""A stream whose upstream stalls after it began: ``chunk_timeout_s`` ends it with an error event in the client's
own format, soon, instead of holding the client until the request's whole timeout (600 s by default)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.fakes.faults import Fault
from tests.integration.conftest import Upstreams, matrix_config
from tests.support.gateway import RunningGateway, running_gateway

MSGS = [{"role": "user", "content": "hello there friend"}]
LIMIT_S = 0.5


@pytest.fixture(scope="module")
def gateway(upstreams: Upstreams) -> Iterator[RunningGateway]:
    with running_gateway(matrix_config(upstreams, chunk_timeout_s=LIMIT_S)) as gw:
        yield gw


def test_an_openai_client_gets_an_error_event_when_the_upstream_stalls_mid_stream(
        gateway: RunningGateway, ups: Upstreams) -> None:
    ups.openai.faults.push(Fault(stall_after=3))
    client = openai.OpenAI(base_url=gateway.v1, api_key="k", max_retries=0, timeout=30)
    got: list[str] = []
    started = time.monotonic()
    with pytest.raises(openai.APIError, match="chunk_timeout_s"):
        for chunk in client.chat.completions.create(model="oai", messages=MSGS, stream=True):  # type: ignore[arg-type]
            got.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(got)  # what came before the stall reached the client
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 5  # the gateway let go of the stalled upstream call
    while ups.openai.traffic.disconnects < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (ups.openai.traffic.disconnects, ups.openai.traffic.completed) == (1, 0)


def test_an_anthropic_client_gets_an_error_event_when_the_upstream_stalls_mid_stream(
        gateway: RunningGateway, ups: Upstreams) -> None:
    ups.anthropic.faults.push(Fault(stall_after=4))
    claude = anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0, timeout=30)
    started = time.monotonic()
    with pytest.raises(anthropic.APIError, match="chunk_timeout_s"), claude.messages.stream(
            model="claude", max_tokens=64, messages=MSGS) as stream:  # type: ignore[arg-type]
        for _ in stream:
            pass
    assert time.monotonic() - started < 10


def test_pauses_shorter_than_the_limit_do_not_cut_the_stream(gateway: RunningGateway, ups: Upstreams) -> None:
    ups.openai.faults.push(Fault(chunk_delay=LIMIT_S / 5))
    client = openai.OpenAI(base_url=gateway.v1, api_key="k", max_retries=0, timeout=30)
    chunks = list(client.chat.completions.create(model="oai", messages=MSGS, stream=True))  # type: ignore[arg-type]
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason == "stop"
    assert ups.openai.traffic.completed == 1
