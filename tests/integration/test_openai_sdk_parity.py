"""What the official openai SDK does with the gateway's answers where the API reference is specific:
error codes and classes, the SDK's own retries, n > 1, structured outputs. Upstreams are fakes that
speak OpenAI's exact wire format (``tests.fakes.openai_upstream``)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from tests.fakes import openai_faults as oai_faults
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI
from tests.integration.conftest import Upstreams
from tests.support.gateway import RunningGateway, running_gateway

ASK = [{"role": "user", "content": "What is a gateway?"}]


@pytest.fixture
def client(gateway: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key="anything", max_retries=0)


@pytest.mark.parametrize(("extra", "param", "code"), [
    ({"temperature": 5}, "temperature", "decimal_above_max_value"),
    ({"temperature": "hot"}, "temperature", "invalid_type"),
    ({"n": 0}, "n", "integer_below_min_value"),
    ({"top_logprobs": 21}, "top_logprobs", "integer_above_max_value"),
    ({"messages": []}, "messages", "empty_array"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "invalid_value"),
    ({"model": None}, "model", "invalid_type"),
])
def test_a_bad_field_is_a_400_with_openais_param_and_code(client: openai.OpenAI, extra: dict[str, object],
                                                           param: str, code: str) -> None:
    body = {"model": "mock", "messages": ASK, **extra}
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(**body)  # type: ignore[call-overload]
    assert (exc.value.param, exc.value.code, exc.value.type) == (param, code, "invalid_request_error")


def test_a_missing_field_is_missing_required_parameter(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.post("/chat/completions", body={"messages": ASK}, cast_to=object)
    assert (exc.value.param, exc.value.code) == ("model", "missing_required_parameter")
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model="mock-embed", input=5)  # type: ignore[arg-type]
    assert (exc.value.param, exc.value.code) == ("input", "invalid_type")


@pytest.mark.parametrize("fault", [
    oai_faults.error(401, "Incorrect API key provided: sk-o***oai.", code="invalid_api_key"),
    oai_faults.error(403, "You are not allowed to sample from this model", type_="permission_error"),
])
def test_an_upstream_refusing_the_gateways_credentials_is_not_retried_by_the_sdk(
        matrix_gateway: RunningGateway, ups: Upstreams, fault: Fault) -> None:
    ups.openai.faults.always(fault)
    sdk = openai.OpenAI(base_url=matrix_gateway.v1, api_key="k", max_retries=2)  # the SDK's default
    with pytest.raises(openai.InternalServerError) as exc:
        sdk.chat.completions.create(model="oai", messages=ASK)  # type: ignore[arg-type]
    assert exc.value.status_code == 502 and exc.value.code == "upstream_auth"
    assert exc.value.response.headers["x-should-retry"] == "false"
    assert ups.openai.traffic.requests == 1  # the operator's config is wrong: no retry can mend it


def test_the_mock_answers_n_choices_streamed_each_with_its_index_and_finish(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="mock", messages=ASK, n=2)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(model="mock", messages=ASK, n=2, stream=True,  # type: ignore[arg-type]
                                                 stream_options={"include_usage": True}))
    text: dict[int, str] = {}
    finish: dict[int, str | None] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            text[choice.index] = text.get(choice.index, "") + (choice.delta.content or "")
            finish[choice.index] = choice.finish_reason or finish.get(choice.index)
    assert text == {c.index: c.message.content for c in whole.choices} and len(text) == 2
    assert finish == {0: "stop", 1: "stop"}
    usages = [c.usage for c in chunks if c.usage is not None]
    assert len(usages) == 1 and chunks[-1].choices == [] and usages[0] == whole.usage
    single = client.chat.completions.create(model="mock", messages=ASK)  # type: ignore[arg-type]
    assert single.usage is not None and whole.usage is not None
    assert whole.usage.completion_tokens == 2 * single.usage.completion_tokens  # n answers are n answers' tokens
    with client.chat.completions.stream(model="mock", messages=ASK, n=2) as stream:  # type: ignore[arg-type]
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert [(c.index, c.message.content) for c in final.choices] == [(i, text[i]) for i in (0, 1)]


class City(BaseModel):
    name: str
    population: int


class Forecast(BaseModel):
    city: City
    days: list[int]
    note: str | None


def test_the_mock_gives_parse_a_value_of_the_asked_model(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Forecast for Paris"}]
    parsed = client.chat.completions.parse(model="mock", messages=ask, response_format=Forecast)  # type: ignore[arg-type]
    assert parsed.choices[0].message.parsed == Forecast(city=City(name="mock", population=1), days=[1], note="mock")
    with client.chat.completions.stream(model="mock", messages=ask, response_format=Forecast) as stream:  # type: ignore[arg-type]
        for _ in stream:
            pass
        assert stream.get_final_completion().choices[0].message.parsed == parsed.choices[0].message.parsed
    tool = openai.pydantic_function_tool(Forecast)
    called = client.chat.completions.parse(model="mock", messages=ask, tools=[tool])  # type: ignore[arg-type]
    calls = called.choices[0].message.tool_calls or []
    assert calls[0].function.parsed_arguments == parsed.choices[0].message.parsed
    plain = client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "json please"}],  # type: ignore[arg-type]
                                           response_format={"type": "json_object"})
    assert json.loads(plain.choices[0].message.content or "")["answer"].startswith("Mock answer to: json please")


def test_the_mock_answers_logprobs_when_asked(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="mock", messages=ASK, logprobs=True, top_logprobs=2)  # type: ignore[arg-type]
    logprobs = whole.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert "".join(t.token for t in logprobs.content) == whole.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].token == t.token and t.logprob <= 0
               and bytes(t.bytes or []) == t.token.encode() for t in logprobs.content)
    chunks = list(client.chat.completions.create(model="mock", messages=ASK, logprobs=True, top_logprobs=2,  # type: ignore[arg-type]
                                                 stream=True))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or ()]
    assert streamed == logprobs.content
    assert client.chat.completions.create(model="mock", messages=ASK).choices[0].logprobs is None  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def floats_only() -> Iterator[RunningGateway]:
    """A gateway whose embeddings model is an OpenAI-compatible server that ignores ``encoding_format``."""
    fake = FakeOpenAI(None, floats_only=True).start()
    models = [{"name": "vec", "provider": "openai_compatible", "model": "text-embedding-3-small",
               "api_base": fake.base_url, "modes": ["embeddings"]}]
    try:
        with running_gateway({"models": models, "routing": {"*": {"num_retries": 0}}}) as gw:
            yield gw
    finally:
        fake.stop()


def test_base64_embeddings_are_base64_whatever_the_upstream_sends(floats_only: RunningGateway) -> None:
    sdk = openai.OpenAI(base_url=floats_only.v1, api_key="k", max_retries=0)
    floats = sdk.embeddings.create(model="vec", input=["a b", "c"], encoding_format="float", dimensions=8)
    packed = sdk.embeddings.create(model="vec", input=["a b", "c"], encoding_format="base64", dimensions=8)
    for f, b in zip(floats.data, packed.data, strict=True):
        assert isinstance(b.embedding, str) and b.index == f.index
        assert struct.unpack("<8f", base64.b64decode(b.embedding)) == pytest.approx(f.embedding, rel=1e-6)
    by_default = sdk.embeddings.create(model="vec", input=["a b", "c"], dimensions=8)  # the SDK asks base64
    for d, f in zip(by_default.data, floats.data, strict=True):
        assert d.embedding == pytest.approx(f.embedding, rel=1e-6)


def test_a_stream_the_upstream_answered_whole_keeps_its_service_tier(
        matrix_gateway: RunningGateway, ups: Upstreams) -> None:
    whole = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
             "service_tier": "flex", "system_fingerprint": "fp_1",
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."}, "logprobs": None,
                          "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    ups.openai.faults.push(Fault(status=200, body=whole))  # a proxy that ignored stream: true
    sdk = openai.OpenAI(base_url=matrix_gateway.v1, api_key="k", max_retries=0)
    chunks = list(sdk.chat.completions.create(model="oai", messages=ASK, stream=True, service_tier="flex",  # type: ignore[arg-type]
                                              stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi."
    assert {c.service_tier for c in chunks} == {"flex"} and {c.system_fingerprint for c in chunks} == {"fp_1"}


@pytest.mark.parametrize("model", ["oai", "az", "compat"])
def test_logprobs_pass_through_plain_and_streamed(matrix_gateway: RunningGateway, ups: Upstreams, model: str) -> None:
    sdk = openai.OpenAI(base_url=matrix_gateway.v1, api_key="k", max_retries=0)
    whole = sdk.chat.completions.create(model=model, messages=ASK, logprobs=True, top_logprobs=3)  # type: ignore[arg-type]
    scores = whole.choices[0].logprobs
    assert scores is not None and scores.content
    assert "".join(t.token for t in scores.content) == whole.choices[0].message.content
    assert all(len(t.top_logprobs) == 3 for t in scores.content)
    chunks = list(sdk.chat.completions.create(model=model, messages=ASK, logprobs=True, top_logprobs=3,  # type: ignore[arg-type]
                                              stream=True))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or ()]
    assert streamed == scores.content


def test_request_fields_the_gateway_does_not_use_reach_openai_as_sent(matrix_gateway: RunningGateway,
                                                                      ups: Upstreams) -> None:
    sdk = openai.OpenAI(base_url=matrix_gateway.v1, api_key="k", max_retries=0)
    fields: dict[str, object] = {
        "store": True, "metadata": {"team": "search"}, "service_tier": "flex", "user": "u-1",
        "prediction": {"type": "content", "content": "Echo"}, "modalities": ["text"], "max_completion_tokens": 2,
        "parallel_tool_calls": False, "seed": 7, "logit_bias": {"50256": -100},
    }
    resp = sdk.chat.completions.create(model="oai", messages=ASK, **fields)  # type: ignore[call-overload]
    assert {k: ups.openai.traffic.last.body.get(k) for k in fields} == fields
    assert (resp.service_tier, resp.choices[0].finish_reason) == ("flex", "length")  # what OpenAI answered


def test_the_mock_streams_parallel_tool_calls_the_stream_helper_assembles_like_the_plain_answer(
        client: openai.OpenAI) -> None:
    tools = [openai.pydantic_function_tool(City), openai.pydantic_function_tool(Forecast)]
    ask = [{"role": "user", "content": "Paris"}]
    plain = client.chat.completions.parse(model="mock", messages=ask, tools=tools)  # type: ignore[arg-type]
    with client.chat.completions.stream(model="mock", messages=ask, tools=tools) as stream:  # type: ignore[arg-type]
        done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    assert [e.name for e in done] == ["City", "Forecast"]
    def calls(message: Any) -> list[tuple[str, str, object]]:
        return [(c.id, c.function.name, c.function.parsed_arguments) for c in message.tool_calls or ()]

    assert final.choices[0].message.content is None is plain.choices[0].message.content  # as OpenAI: no text
    assert calls(final.choices[0].message) == calls(plain.choices[0].message)
    assert len(calls(plain.choices[0].message)) == 2
    assert final.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("model", ["oai", "az", "compat"])
def test_n_choices_stream_through_with_one_usage_chunk(matrix_gateway: RunningGateway, ups: Upstreams,
                                                       model: str) -> None:
    sdk = openai.OpenAI(base_url=matrix_gateway.v1, api_key="k", max_retries=0)
    whole = sdk.chat.completions.create(model=model, messages=ASK, n=3)  # type: ignore[arg-type]
    with sdk.chat.completions.stream(model=model, messages=ASK, n=3,  # type: ignore[arg-type]
                                     stream_options={"include_usage": True}) as stream:
        chunks = [e.chunk for e in stream if e.type == "chunk"]
        final = stream.get_final_completion()
    assert [(c.index, c.message.content, c.finish_reason) for c in final.choices] == \
        [(c.index, c.message.content, c.finish_reason) for c in whole.choices]
    assert [c.index for c in whole.choices] == [0, 1, 2]
    assert len([c for c in chunks if c.usage is not None]) == 1 and final.usage == whole.usage


def _sse_chunks(gateway: RunningGateway, body: dict[str, Any]) -> list[dict[str, Any]]:
    import requests
    resp = requests.post(f"{gateway.v1}/chat/completions", json=body, headers={"authorization": "Bearer k"},
                         timeout=10)
    assert resp.status_code == 200, resp.text
    lines = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_a_stream_the_client_asked_no_usage_of_has_no_usage_field_as_openais(matrix_gateway: RunningGateway) -> None:
    """The gateway asks the upstream for usage (to bill it); OpenAI then sends "usage": null on every chunk. A client
    that did not ask gets chunks as OpenAI sends them without stream_options: no usage field at all."""
    plain = _sse_chunks(matrix_gateway, {"model": "oai", "messages": ASK, "stream": True})
    assert plain and all("usage" not in c for c in plain) and all(c["choices"] for c in plain)
    asked = _sse_chunks(matrix_gateway, {"model": "oai", "messages": ASK, "stream": True,
                                         "stream_options": {"include_usage": True}})
    assert all(c["usage"] is None for c in asked[:-1]) and asked[-1]["usage"]["total_tokens"] > 0
