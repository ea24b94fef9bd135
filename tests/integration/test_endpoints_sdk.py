"""The endpoints beside chat (embeddings, legacy completions) as the official OpenAI SDK calls them, on mock
models: bad input is a 400 naming the field, and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.support.gateway import RunningGateway, running_gateway


@pytest.fixture(scope="module")
def gw() -> Iterator[RunningGateway]:
    models = [{"name": "mock", "provider": "mock"}, {"name": "emb", "provider": "mock", "modes": ["embeddings"]}]
    with running_gateway({"models": models, "routing": {"*": {"num_retries": 0}}}) as running:
        yield running


@pytest.fixture
def client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key="anything", max_retries=0)


def test_the_mock_refuses_more_dimensions_than_an_embedding_model_makes(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="emb", input="a", dimensions=100_000)
    assert err.value.body["param"] == "dimensions"  # type: ignore[index]
    assert len(client.embeddings.create(model="emb", input="a", dimensions=8).data[0].embedding) == 8
