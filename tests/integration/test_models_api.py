"""GET /v1/models through both official SDKs: OpenAI's shape for OpenAI's, Anthropic's (``type: model``, pages)
for Anthropic's, which sends ``anthropic-version``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.support.gateway import RunningGateway, running_gateway

NAMES = ["alpha", "bravo", "charlie", "delta", "echo"]


@pytest.fixture(scope="module")
def gw() -> Iterator[RunningGateway]:
    with running_gateway({"models": [{"name": n, "provider": "mock"} for n in NAMES]}) as running:
        yield running


@pytest.fixture
def claude(gw: RunningGateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="anything", max_retries=0)


def test_the_anthropic_sdk_lists_every_model_page_by_page(claude: anthropic.Anthropic) -> None:
    first = claude.models.list(limit=2)
    assert [m.id for m in first.data] == NAMES[:2] and first.has_more
    assert (first.first_id, first.last_id) == ("alpha", "bravo")
    card = first.data[0]
    assert (card.type, card.display_name) == ("model", "alpha")
    assert card.created_at == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert [m.id for m in claude.models.list(limit=2)] == NAMES  # the SDK follows last_id to the end
    everything = claude.models.list()
    assert [m.id for m in everything.data] == NAMES and not everything.has_more


def test_the_anthropic_sdk_pages_backwards_with_before_id(claude: anthropic.Anthropic) -> None:
    page = claude.models.list(before_id="delta", limit=2)
    assert [m.id for m in page.data] == ["bravo", "charlie"] and page.has_more
    assert [m.id for m in claude.models.list(before_id="bravo", limit=5).data] == ["alpha"]


def test_the_anthropic_sdk_retrieves_one_model_and_is_told_which_does_not_exist(
        claude: anthropic.Anthropic) -> None:
    raw = claude.models.with_raw_response.retrieve("charlie")
    assert raw.parse().id == "charlie" and raw.parse().type == "model"
    assert raw.headers["request-id"]  # the SDK's _request_id
    with pytest.raises(anthropic.NotFoundError) as err:
        claude.models.retrieve("nope")
    assert err.value.body["error"]["type"] == "not_found_error"  # type: ignore[index, call-overload]


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 1001}, {"after_id": "nope"},
                                   {"after_id": "alpha", "before_id": "echo"}])
def test_a_bad_page_request_is_an_anthropic_400(claude: anthropic.Anthropic, query: dict[str, object]) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.models.list(**query)  # type: ignore[arg-type]
    assert err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index, call-overload]


def test_the_openai_sdk_still_gets_openais_shape(gw: RunningGateway) -> None:
    client = openai.OpenAI(base_url=gw.v1, api_key="anything", max_retries=0)
    models = client.models.list()
    assert [m.id for m in models] == NAMES and models.data[0].object == "model"
    assert client.models.retrieve("echo").owned_by == "mock"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("nope")
    assert err.value.code == "model_not_found"
