"""A call OpenAI served in a cheaper or dearer tier is charged at that tier's rates, as the ledger shows it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from aigw.cli.admin_client import AdminClient
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI
from tests.integration.tenancy_support import MASTER, key_spend, openai_gateway_config, setup_key
from tests.support.gateway import RunningGateway, running_gateway

# $1000 / $2000 per million tokens; flex at half, priority at twice (the fake reports the tier it was asked)
PRICES = {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0,
          "tiers": {"flex": {"scale": 0.5}, "priority": {"scale": 2.0}}}


@pytest.fixture(scope="module")
def oai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI("sk-oai").start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, oai: FakeOpenAI) -> Iterator[RunningGateway]:
    config = openai_gateway_config(tmp_path_factory.mktemp("tiers") / "gw.db", oai.base_url, prices=PRICES)
    with running_gateway(config) as running:
        yield running


def _call(gw: RunningGateway, key: str, tier: str, stream: bool) -> str | None:
    """One chat call asking for ``tier``; the tier the answer says it was served in."""
    client = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=10)
    messages = [{"role": "user", "content": "tell me about the sea"}]
    if stream:
        chunks = list(client.chat.completions.create(model="oai", messages=messages, max_tokens=50,  # type: ignore[arg-type]
                                                     stream=True, service_tier=tier,  # type: ignore[arg-type]
                                                     stream_options={"include_usage": True}))
        return chunks[-1].service_tier
    return client.chat.completions.create(model="oai", messages=messages, max_tokens=50,  # type: ignore[arg-type]
                                          service_tier=tier).service_tier  # type: ignore[arg-type]


def _standard(row: dict[str, Any]) -> float:
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    return float(row["prompt_tokens"] * 1000 + row["completion_tokens"] * 2000) / 1e6


@pytest.mark.parametrize(("tier", "factor"), [("flex", 0.5), ("priority", 2.0), ("auto", 1.0)])
@pytest.mark.parametrize("stream", [False, True])
def test_a_call_is_charged_at_the_rates_of_the_tier_it_was_served_in(gw: RunningGateway, tier: str, factor: float,
                                                                      stream: bool) -> None:
    admin = AdminClient(gw.url, MASTER)
    key = setup_key(admin, f"tier-{tier}-{stream}")
    assert _call(gw, key["key"], tier, stream) == (tier if tier != "auto" else "default")
    row = key_spend(admin, key["id"])
    assert row["cost_usd"] == pytest.approx(_standard(row) * factor)


@pytest.mark.parametrize("stream", [False, True])
def test_priority_asked_but_served_at_default_is_charged_at_standard_rates(
    gw: RunningGateway, oai: FakeOpenAI, stream: bool
) -> None:
    """OpenAI serves a priority request over the priority limits at the default tier, and says so."""
    admin = AdminClient(gw.url, MASTER)
    key = setup_key(admin, f"tier-downgraded-{stream}")
    oai.faults.push(Fault(served_tier="default"))
    assert _call(gw, key["key"], "priority", stream) == "default"
    row = key_spend(admin, key["id"])
    assert row["cost_usd"] == pytest.approx(_standard(row))  # not twice that


def test_a_stream_answered_whole_is_charged_at_the_tier_the_answer_reports(gw: RunningGateway,
                                                                           oai: FakeOpenAI) -> None:
    """A proxy that ignored ``stream: true``: the whole answer says default, so priority rates are not due."""
    admin = AdminClient(gw.url, MASTER)
    key = setup_key(admin, "tier-unstreamed")
    whole = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
             "service_tier": "default",
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "The sea is wide."},
                          "logprobs": None, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}
    oai.faults.push(Fault(status=200, body=whole))
    assert _call(gw, key["key"], "priority", True) == "default"
    row = key_spend(admin, key["id"])
    assert row["cost_usd"] == pytest.approx(_standard(row))  # not twice that
