"""Images cost tokens: a budget reserves them before a vision call, and a call without usage bills them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from aigw.accounting.tokens import LOCAL_COUNTER
from aigw.cli.admin_client import AdminClient
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI
from tests.integration.tenancy_support import MASTER, gateway_config, key_spend, setup_key
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.media import b64, data_url, image_part, png

PRICES = {"input_per_mtok": 100.0, "output_per_mtok": 100.0}  # a vision call: ~790 tokens, ~8 cents
QUESTION = {"type": "text", "text": "What is in this picture?"}


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    oai, compat = FakeOpenAI("sk-oai").start(), FakeOpenAI(None).start()
    yield oai, compat
    oai.stop()
    compat.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, fakes: tuple[FakeOpenAI, FakeOpenAI]) -> Iterator[RunningGateway]:
    oai, compat = fakes
    config = gateway_config(tmp_path_factory.mktemp("media") / "gw.db")
    config["models"] = [
        {"name": "oai", "provider": "openai", "model": "gpt-4o", "api_base": oai.base_url, "api_key": "sk-oai",
         "prices": PRICES},
        {"name": "mini", "provider": "openai", "model": "gpt-4o-mini", "api_base": oai.base_url, "api_key": "sk-oai",
         "prices": PRICES},
        {"name": "local-vision", "provider": "openai_compatible", "model": "gpt-4o", "api_base": compat.base_url,
         "prices": PRICES},
    ]
    config["routing"] = {"*": {"num_retries": 0}}
    with running_gateway(config) as running:
        yield running


def test_concurrent_vision_calls_cannot_overrun_a_budget_by_more_than_one_call(
    gw: RunningGateway, fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    admin = AdminClient(gw.url, MASTER)
    key = setup_key(admin, "vision-budget", budget_usd=0.5, budget_period="total")
    client = openai.AsyncOpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0, timeout=20)
    messages: Any = [{"role": "user", "content": [QUESTION, image_part("https://example.com/cat.png")]}]

    async def one() -> int:
        try:
            await client.chat.completions.create(model="oai", messages=messages, max_tokens=20)
            return 200
        except openai.RateLimitError:
            return 429

    async def waves() -> list[int]:
        statuses: list[int] = []
        for _ in range(2):  # all of a wave in flight together: the upstream answers after 0.3 s
            statuses += await asyncio.gather(*(one() for _ in range(12)))
        return statuses

    fakes[0].faults.always(Fault.slow(headers=0.3))
    try:
        statuses = asyncio.run(waves())
    finally:
        fakes[0].faults.clear()
    ok = statuses.count(200)
    assert ok >= 1 and statuses.count(429) >= 1
    row = key_spend(admin, key["id"], requests=len(statuses))  # every call's row: refused ones have one too
    one_call = row["cost_usd"] / max(1, ok) if ok else 0.0
    assert row["prompt_tokens"] >= ok * 765  # the upstream billed each image
    # an image counted as 0 reserved ~$0.004 a call, and all 12 of the first wave ran: ~$0.95 on a $0.50 budget
    assert row["cost_usd"] <= 0.5 + one_call


def test_a_gpt_4o_mini_vision_call_reserves_its_images_at_the_minis_bound(gw: RunningGateway) -> None:
    # gpt-4o-mini bills an image at up to 2,833 + 8 x 5,667 = 48,169 tokens (~$4.82 here), ten times the
    # common bound: a $1 budget admitted such calls, each able to settle several times its reservation
    admin = AdminClient(gw.url, MASTER)
    key = setup_key(admin, "vision-mini", budget_usd=1.0, budget_period="total")
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0, timeout=10)
    picture: Any = [{"role": "user", "content": [QUESTION, image_part("https://example.com/cat.png")]}]
    with pytest.raises(openai.RateLimitError, match="Budget exceeded"):
        client.chat.completions.create(model="mini", messages=picture, max_tokens=20)
    client.chat.completions.create(model="oai", messages=picture, max_tokens=20)  # gpt-4o: the common bound
    client.chat.completions.create(model="mini", messages=[{"role": "user", "content": "hi"}], max_tokens=20)


def test_an_image_is_billed_by_a_local_count_when_the_upstream_reports_no_usage(
    gw: RunningGateway, fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    admin = AdminClient(gw.url, MASTER)
    key = setup_key(admin, "vision-no-usage")
    fakes[1].faults.push(Fault(no_usage=True))
    messages: Any = [{"role": "user", "content": [QUESTION, image_part(data_url(png(1024, 1024)))]}]
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0, timeout=10)
    stream = client.chat.completions.create(model="local-vision", messages=messages, max_tokens=50, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    row = key_spend(admin, key["id"])
    text_only = LOCAL_COUNTER.count_messages([{"role": "user", "content": [QUESTION]}])
    assert row["prompt_tokens"] == text_only + 765  # OpenAI's tile formula: 4 tiles + 85, not free
    assert row["cost_usd"] == pytest.approx((row["prompt_tokens"] + row["completion_tokens"]) * 100 / 1e6)


def test_an_anthropic_image_block_is_billed_too_when_the_upstream_reports_no_usage(
    gw: RunningGateway, fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    admin = AdminClient(gw.url, MASTER)
    key = setup_key(admin, "vision-no-usage-anthropic")
    fakes[1].faults.push(Fault(no_usage=True))
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(png(2048, 4096))}}
    ant = anthropic.Anthropic(base_url=gw.url, api_key=key["key"], max_retries=0, timeout=10)
    with ant.messages.stream(model="local-vision", max_tokens=50,
                             messages=[{"role": "user", "content": [image, QUESTION]}]) as s:  # type: ignore[list-item]
        assert "".join(s.text_stream)
    row = key_spend(admin, key["id"])
    assert row["prompt_tokens"] >= 1105  # 6 tiles after scaling to 768x1536, + 85
