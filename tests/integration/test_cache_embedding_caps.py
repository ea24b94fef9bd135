"""The semantic cache's embedding calls count against the embedding deployment's own rpm/tpm caps in the
shared store, as requests' calls do: a client's own embeddings call after the cache used up the deployment's
rpm is refused (429) instead of going over the cap, and a chat request whose lookup finds the deployment full
is still answered (a miss, the lookup skipped), with no embedding call over the cap."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from aigw.cli.admin_client import AdminClient
from tests.fakes.openai_upstream import FakeOpenAI
from tests.integration.tenancy_support import MASTER, PRICED_MOCK, chat_body, gateway_config, setup_key
from tests.support.gateway import RunningGateway, running_gateway


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(None).start()
    yield fake
    fake.stop()


@pytest.fixture
def gw(upstream: FakeOpenAI, tmp_path: Path) -> Iterator[RunningGateway]:
    vec = {"name": "vec", "provider": "openai_compatible", "model": "text-embedding-3-small", "rpm": 2,
           "api_base": upstream.base_url, "modes": ["embeddings"], "prices": {"input_per_mtok": 0.02}}
    cache = {"mode": "semantic", "timeout_ms": 1000, "retry_after_s": 0,
             "semantic": {"threshold": 0.99, "embedding_model": "vec", "embed_timeout_ms": 3000}}
    with running_gateway(gateway_config(tmp_path / "gw.db", models=[PRICED_MOCK, vec], cache=cache,
                                        routing={"*": {"num_retries": 0}})) as g:
        yield g


def test_the_caches_embeddings_count_against_the_deployments_rpm(gw: RunningGateway, upstream: FakeOpenAI) -> None:
    key = setup_key(AdminClient(gw.url, MASTER), "embed-caps")["key"]
    client = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    questions = ("What is the capital of France?", "How do I bake bread?", "Why is the sky blue?")
    heard = []
    for q in questions:  # the third finds the deployment at its rpm: answered all the same, no lookup
        raw = client.chat.completions.with_raw_response.create(**chat_body(q))
        heard.append(raw.headers["x-aigw-cache"])
    assert heard == ["miss", "miss", "miss"]
    assert sum(1 for r in upstream.traffic.log if r.path.endswith("/embeddings")) == 2  # never over rpm 2
    with pytest.raises(openai.RateLimitError):  # the cache's two calls used the minute's two
        client.embeddings.create(model="vec", input="hello")
    assert sum(1 for r in upstream.traffic.log if r.path.endswith("/embeddings")) == 2
