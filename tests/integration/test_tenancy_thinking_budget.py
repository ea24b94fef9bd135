"""A budget reserves a reasoning call at the ``max_tokens`` the Anthropic adapter really sends: with
``reasoning_effort`` and no max, the thinking budget on top of the default (high: 16,384 + 4,096), not the
default alone. Reserved at 4,096, concurrent reasoning calls from a key with a small budget were all admitted
and could settle far above it. End to end: the OpenAI SDK, a tenancy gateway, the fake Anthropic upstream."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from aigw.cli.admin_client import AdminClient
from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.faults import Fault
from tests.integration.conftest import Upstreams
from tests.integration.cut_calls_support import cut_calls_gateway
from tests.integration.tenancy_support import MASTER, setup_key
from tests.support.gateway import RunningGateway

# $1 / $10 per million tokens: a call's worst case is mostly its output; one that may think at ``high`` and write
# its whole max_tokens is ~$0.2048, one reserved at the default 4,096 ~$0.041
PRICES = {"input_per_mtok": 1.0, "output_per_mtok": 10.0}
ASK: Any = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams) -> Iterator[RunningGateway]:
    claude = {"name": "claude", "provider": "anthropic", "model": "claude-sonnet-4-5", "prices": PRICES,
              "api_base": upstreams.anthropic_server.url, "api_key": ANTHROPIC_KEY}
    with cut_calls_gateway(tmp_path_factory.mktemp("thinking-budget") / "gw.db", [claude]) as running:
        yield running


def _client(gw: RunningGateway, tenant: str, budget_usd: float) -> openai.OpenAI:
    key = setup_key(AdminClient(gw.url, MASTER), tenant, budget_usd=budget_usd, budget_period="daily")
    return openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0, timeout=10)


def test_a_reasoning_call_is_refused_for_the_thinking_it_may_bill(gw: RunningGateway, ups: Upstreams) -> None:
    client = _client(gw, "thinking-small-co", 0.10)
    client.chat.completions.create(model="claude", messages=ASK)  # ~$0.041 reserved: fits
    client.chat.completions.create(model="claude", messages=ASK, reasoning_effort="low")  # 5,120: ~$0.051
    assert ups.anthropic.traffic.last.body["max_tokens"] == 1024 + 4096
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="claude", messages=ASK, reasoning_effort="high")
    assert refused.value.code == "budget_exceeded" and refused.value.response.headers["x-should-retry"] == "false"
    assert "this request may cost up to $0.2048 (lower max_tokens to fit)" in refused.value.message
    assert ups.anthropic.traffic.requests == 2  # refused before the upstream
    # the client's own max bounds the thinking (its budget shrinks to fit under it): reserved at that max
    client.chat.completions.create(model="claude", messages=ASK, reasoning_effort="high", max_completion_tokens=2000)
    assert ups.anthropic.traffic.last.body["max_tokens"] == 2000
    assert ups.anthropic.traffic.last.body["thinking"] == {"type": "enabled", "budget_tokens": 1999}


def test_reasoning_calls_in_flight_hold_what_they_may_bill(gw: RunningGateway, ups: Upstreams) -> None:
    # room for two such calls' worst case ($0.4096), not three; reserved at 4,096 output tokens, all three got in
    client = _client(gw, "thinking-burst-co", 0.45)
    ups.anthropic.faults.push(Fault.slow(headers=2.0), times=2)  # the first two stay in flight
    answers: list[object] = []

    def think() -> None:
        try:
            answers.append(client.chat.completions.create(model="claude", messages=ASK, reasoning_effort="high"))
        except Exception as exc:  # the assertion below says what it was
            answers.append(exc)

    threads = [threading.Thread(target=think) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while ups.anthropic.traffic.requests < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ups.anthropic.traffic.requests == 2, "the first two calls never reached the upstream"
    with pytest.raises(openai.RateLimitError) as refused:  # while both hold their reservations
        client.chat.completions.create(model="claude", messages=ASK, reasoning_effort="high")
    assert refused.value.code == "budget_exceeded"
    for t in threads:
        t.join(10)
    assert len(answers) == 2 and all(isinstance(a, openai.types.chat.ChatCompletion) for a in answers), answers
    assert ups.anthropic.traffic.requests == 2
    # settled to what they cost, the budget has room again
    client.chat.completions.create(model="claude", messages=ASK, reasoning_effort="high")
