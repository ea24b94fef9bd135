"""Azure OpenAI specifics: URL shape, api-version, api-key auth, Azure's errors and stream preamble.

The shared scenarios (plain, stream, tools, errors, timeouts, cancellation) run for azure
in test_openai_adapter.py through the ``family`` fixture.
"""

from __future__ import annotations

from typing import Any

import pytest

from aigw import errors
from aigw.config.models import Deployment
from aigw.providers.azure.client import DEFAULT_API_VERSION, build
from aigw.providers.http import HttpClients
from tests.fakes import openai_faults as oai
from tests.fakes.azure_upstream import FakeAzure
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI
from tests.providers.openai_family import AZURE_KEY, call, chat_body, collect, joined_text, stream_body


def azure(fake: FakeOpenAI, clients: HttpClients, **overrides: Any) -> Any:
    fields: dict[str, Any] = {"name": "public-name", "provider": "azure", "model": "gpt-4o-mini",
                              "deployment": "chat", "api_base": fake.url, "api_key": AZURE_KEY}
    return build(Deployment(**{**fields, **overrides}), clients)


async def test_deployment_path_version_and_api_key(fake_azure: FakeOpenAI, clients: HttpClients) -> None:
    answer = await azure(fake_azure, clients).chat(chat_body(), call())
    assert answer["choices"][0]["message"]["content"] == "Echo: hello there"
    sent = fake_azure.traffic.last
    assert sent.path == "/openai/deployments/chat/chat/completions"
    assert sent.query == {"api-version": DEFAULT_API_VERSION}
    assert sent.headers["api-key"] == AZURE_KEY and "Authorization" not in sent.headers


async def test_deployment_defaults_to_model_and_version_is_configurable(
    fake_azure: FakeOpenAI, clients: HttpClients
) -> None:
    provider = azure(fake_azure, clients, deployment="", api_version="2024-06-01", api_base=fake_azure.url + "/")
    await provider.chat(chat_body(), call())
    assert fake_azure.traffic.last.path == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert fake_azure.traffic.last.query == {"api-version": "2024-06-01"}


async def test_endpoint_pasted_with_openai_suffix(fake_azure: FakeOpenAI, clients: HttpClients) -> None:
    await azure(fake_azure, clients, api_base=fake_azure.url + "/openai/").chat(chat_body(), call())
    assert fake_azure.traffic.last.path == "/openai/deployments/chat/chat/completions"


@pytest.mark.parametrize("suffix", ["/openai/v1", "/openai/v1/"])
async def test_the_v1_api_takes_openais_paths_and_the_deployment_as_the_model(
        fake_azure: FakeOpenAI, clients: HttpClients, suffix: str) -> None:
    provider = azure(fake_azure, clients, api_base=fake_azure.url + suffix, deployment="reasoner", model="o3-mini")
    answer = await provider.chat(chat_body(max_tokens=50), call())
    sent = fake_azure.traffic.last
    assert (sent.path, sent.query, sent.body["model"]) == ("/openai/v1/chat/completions", {}, "reasoner")
    assert sent.headers["api-key"] == AZURE_KEY
    assert "max_completion_tokens" in sent.body and "max_tokens" not in sent.body  # shaped for o3-mini still
    assert answer["model"] == "o3-mini"
    chunks = await collect(provider.stream_chat(stream_body(), call()))
    assert joined_text(chunks) == "Echo: hello there" and fake_azure.traffic.last.path == "/openai/v1/chat/completions"
    embedder = azure(fake_azure, clients, api_base=fake_azure.url + suffix, deployment="embed",
                     model="text-embedding-3-small")
    await embedder.embeddings({"model": "public-name", "input": "hi"}, call())
    assert (fake_azure.traffic.last.path, fake_azure.traffic.last.body["model"]) == ("/openai/v1/embeddings", "embed")


async def test_unsupported_api_version(fake_azure: FakeOpenAI, clients: HttpClients) -> None:
    with pytest.raises(errors.InvalidRequest, match="API version not supported"):
        await azure(fake_azure, clients, api_version="1999-01-01").chat(chat_body(), call())


async def test_unknown_deployment(fake_azure: FakeOpenAI, clients: HttpClients) -> None:
    with pytest.raises(errors.UpstreamModelNotFound) as caught:
        await azure(fake_azure, clients, deployment="nope").chat(chat_body(), call())
    assert (caught.value.status, caught.value.code) == (502, "upstream_model_not_found")


async def test_bad_key(fake_azure: FakeOpenAI, clients: HttpClients) -> None:
    with pytest.raises(errors.AuthError) as caught:
        await azure(fake_azure, clients, api_key="0123456789abcdef0123456789abcdef").chat(chat_body(), call())
    assert caught.value.status == 502 and "0123456789abcdef" not in caught.value.message


async def test_content_filter(fake_azure: FakeOpenAI, clients: HttpClients) -> None:
    fake_azure.faults.push(oai.content_filter(azure=True))
    with pytest.raises(errors.ContentPolicy) as caught:
        await azure(fake_azure, clients).chat(chat_body(), call())
    assert caught.value.code == "content_filter" and caught.value.param == "prompt"


async def test_rate_limit_with_wait_only_in_the_message(fake_azure: FakeOpenAI, clients: HttpClients) -> None:
    body = oai.rate_limited(7, azure=True).body
    fake_azure.faults.push(Fault(status=429, body=body))  # no retry-after header at all
    with pytest.raises(errors.RateLimited) as caught:
        await azure(fake_azure, clients).chat(chat_body(), call())
    assert caught.value.retry_after == 7.0


async def test_rate_limit_header_wins(fake_azure: FakeOpenAI, clients: HttpClients) -> None:
    fake_azure.faults.push(oai.rate_limited(2.5, azure=True))
    with pytest.raises(errors.RateLimited) as caught:
        await collect(azure(fake_azure, clients).stream_chat(stream_body(), call()))
    assert caught.value.retry_after == 2.5


async def test_stream_skips_prompt_filter_preamble(fake_azure: FakeOpenAI, clients: HttpClients) -> None:
    chunks = await collect(azure(fake_azure, clients).stream_chat(stream_body("x y"), call()))
    assert chunks[0]["id"].startswith("chatcmpl-") and chunks[0]["choices"]
    assert joined_text(chunks) == "Echo: x y"
    assert chunks[-1]["usage"]["completion_tokens"] == 3


async def test_reasoning_deployment_gets_max_completion_tokens(
    fake_azure: FakeOpenAI, clients: HttpClients
) -> None:
    provider = azure(fake_azure, clients, model="o3-mini", deployment="reasoner")
    await provider.chat(chat_body(max_tokens=5), call())
    assert fake_azure.traffic.last.body["max_completion_tokens"] == 5


async def test_models_list_path(fake_azure: FakeOpenAI, clients: HttpClients) -> None:
    await azure(fake_azure, clients).list_models(call())
    assert fake_azure.traffic.last.path == "/openai/models"
    assert fake_azure.traffic.last.query == {"api-version": DEFAULT_API_VERSION}


def test_api_base_is_required(clients: HttpClients) -> None:
    with pytest.raises(ValueError, match="api_base"):
        build(Deployment(name="a", provider="azure", model="gpt-4o-mini"), clients)


@pytest.mark.parametrize("fake_finish", [True, "block"])
async def test_async_filter_annotations_reach_the_client_as_chunks_it_can_read(
        fake_azure: FakeAzure, clients: HttpClients, fake_finish: bool | str) -> None:
    """Azure's asynchronous filter sends choices with filter results and no ``delta`` (and an empty id and
    object): forwarded as they are, ``chunk.choices[0].delta.content`` raised in the client's loop."""
    fake_azure.async_filter = fake_finish
    chunks = await collect(azure(fake_azure, clients).stream_chat(stream_body("x y"), call()))
    with_choices = [c for c in chunks if c["choices"]]
    assert all("delta" in choice for c in with_choices for choice in c["choices"])
    assert all(c["id"].startswith("chatcmpl-") and c["object"] == "chat.completion.chunk" for c in chunks)
    finishes = [choice["finish_reason"] for c in with_choices for choice in c["choices"] if choice["finish_reason"]]
    if fake_finish == "block":  # the filter's verdict ends the answer: the client must see it
        assert finishes == ["content_filter"]
    else:
        assert joined_text(chunks) == "Echo: x y" and finishes == ["stop"]


@pytest.mark.parametrize("version", ["2024-02-01", "2024-06-01"])
async def test_streams_on_an_api_version_without_stream_options(
        fake_azure: FakeAzure, clients: HttpClients, version: str) -> None:
    """api-versions before 2024-09-01 refuse ``stream_options`` (400 "Unrecognized request argument"): every
    stream of a deployment pinned to one failed, since usage is always asked for. Now it is not sent there."""
    provider = azure(fake_azure, clients, api_version=version)
    chunks = await collect(provider.stream_chat(stream_body("x y"), call()))
    assert joined_text(chunks) == "Echo: x y"
    assert "stream_options" not in fake_azure.traffic.last.body
    await collect(azure(fake_azure, clients).stream_chat(stream_body(), call()))
    assert fake_azure.traffic.last.body["stream_options"] == {"include_usage": True}, "newer versions keep it"


async def test_rate_limit_with_try_again_in_the_message(fake_azure: FakeAzure, clients: HttpClients) -> None:
    """Azure AI Services' gateway answers 429 ``Rate limit is exceeded. Try again in N seconds.`` with no
    retry-after header: the wait was read only from "retry after", so the client got none."""
    body = {"error": {"code": "429", "message": "Rate limit is exceeded. Try again in 2 seconds."}}
    fake_azure.faults.push(Fault(status=429, body=body))
    with pytest.raises(errors.RateLimited) as caught:
        await azure(fake_azure, clients).chat(chat_body(), call())
    assert caught.value.retry_after == 2.0
