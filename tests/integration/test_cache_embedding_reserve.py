"""A budget reserves the semantic cache's embedding with the request: the embedding (through a priced
deployment, each try the router may make) is part of the worst case, so a key whose budget the chat call alone
fits but the embedding does not is refused before any upstream call, and concurrent calls cannot overrun it by
their embeddings. A local embedder, a request the semantic lookup skips (tools) or another endpoint reserve
nothing for it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from aigw.cli.admin_client import AdminClient
from tests.fakes.openai_upstream import FakeOpenAI
from tests.integration.tenancy_support import MASTER, PRICED_MOCK, chat_body, gateway_config, setup_key
from tests.support.gateway import RunningGateway, running_gateway

# 20 cents a token: one embedding of the short question may cost a few dollars, the chat call's worst case
# (20 output tokens at $2,000 a million, the prompt at $1,000) some cents
EMBED_PER_MTOK = 200_000.0
QUESTION = "What is the capital of France?"
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(None).start()
    yield fake
    fake.stop()


def _gateway(upstream: FakeOpenAI, tmp: Path, retries: int) -> Any:
    vec = {"name": "vec", "provider": "openai_compatible", "model": "text-embedding-3-small",
           "api_base": upstream.base_url, "modes": ["embeddings"], "prices": {"input_per_mtok": EMBED_PER_MTOK}}
    cache = {"mode": "semantic", "timeout_ms": 1000,
             "semantic": {"threshold": 0.99, "embedding_model": "vec", "embed_timeout_ms": 3000}}
    return running_gateway(gateway_config(tmp / "gw.db", models=[PRICED_MOCK, vec], cache=cache,
                                          routing={"*": {"num_retries": 0}, "vec": {"num_retries": retries}}))


def _ask(gw: RunningGateway, key: str, **extra: Any) -> tuple[int, str]:
    client = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    try:
        client.chat.completions.create(**chat_body(QUESTION, **extra))
    except openai.APIStatusError as err:
        return err.status_code, str(err.body)
    return 200, ""


def _worst(message: str) -> float:
    found = re.search(r"may cost up to \$([0-9.]+)", message)
    assert found, message
    return float(found.group(1))


def test_the_embedding_is_reserved_with_the_call_and_refused_before_any_upstream_call(
        upstream: FakeOpenAI, tmp_path: Path) -> None:
    with _gateway(upstream, tmp_path, retries=0) as gw:
        admin = AdminClient(gw.url, MASTER)
        key = setup_key(admin, "embed-reserve", budget_usd=1.00, budget_period="total")  # the chat call fits
        upstream.reset()
        status, body = _ask(gw, key["key"])
        assert status == 429 and "budget_exceeded" in body, body
        assert upstream.traffic.requests == 0  # refused before the embedding
        assert _worst(body) > 1.0
        # a request the semantic lookup skips (it carries tools) reserves the chat call alone: it runs
        status, body = _ask(gw, key["key"], tools=[TOOL])
        assert status == 200, body
        assert upstream.traffic.requests == 0


def test_each_try_the_router_may_make_of_the_embedding_is_reserved(upstream: FakeOpenAI, tmp_path: Path) -> None:
    worst = {}
    for retries in (0, 2):
        (tmp_path / str(retries)).mkdir()
        with _gateway(upstream, tmp_path / str(retries), retries=retries) as gw:
            key = setup_key(AdminClient(gw.url, MASTER), "embed-tries", budget_usd=0.01, budget_period="total")
            status, body = _ask(gw, key["key"])
            assert status == 429, body
            worst[retries] = _worst(body)
    embedding = (worst[2] - worst[0]) / 2  # three tries add two embeddings to one
    assert embedding > 1.0  # dollars: the question at 20 cents a token
    assert 0 < worst[0] - embedding < 0.2  # what is left is the chat call's worst case (cents)
