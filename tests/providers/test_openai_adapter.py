"""The OpenAI adapter, and the scenario suite every OpenAI-family provider must pass.

Tests taking ``family`` run once per provider kind (openai, azure, openai_compatible),
each against its own fake upstream; the rest are OpenAI-specific.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import socket
import struct
import time
from collections.abc import Iterator

import aiohttp
import orjson
import pytest

from aigw import errors
from aigw.config.models import Deployment
from aigw.http.anthropic_api import parse_messages  # what /v1/messages hands the pipeline
from aigw.providers.base import SupportsCompletions, SupportsEmbeddings, SupportsModelList
from aigw.providers.http import HttpClients, parse_retry_after
from aigw.providers.openai.client import build
from tests.fakes import openai_faults as oai
from tests.fakes.faults import Fault, FaultScript
from tests.fakes.openai_upstream import FakeOpenAI
from tests.providers.openai_family import (
    Family,
    call,
    chat_body,
    collect,
    joined_text,
    joined_tool_calls,
    stream_body,
)
from tests.support.servers import unaccepting_port as black_hole

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"tz": {"type": "string"}}}}}


# -- plain, stream, tools, json mode ---------------------------------------------------


async def test_chat_sends_upstream_model_and_auth(family: Family) -> None:
    body = chat_body("hello there")
    answer = await family.provider().chat(body, call())
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "Echo: hello there"
    assert answer["usage"]["total_tokens"] == answer["usage"]["prompt_tokens"] + 3
    sent = family.fake.traffic.last
    assert sent.body["model"] == "gpt-4o-mini" and "stream" not in sent.body
    name, value = family.auth_header()
    assert sent.headers[name] == value
    assert body == chat_body("hello there"), "the caller's body must not change"


async def test_stream_yields_chunks_and_usage_last(family: Family) -> None:
    chunks = await collect(family.provider().stream_chat(stream_body("one two three"), call()))
    assert joined_text(chunks) == "Echo: one two three"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["choices"] for c in chunks[:-1]), "no empty preamble chunks reach the gateway"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert family.fake.traffic.last.body["stream_options"] == {"include_usage": True}


async def test_tool_call(family: Family) -> None:
    body = chat_body("Paris weather", tools=[WEATHER], tool_choice="auto")
    message = (await family.provider().chat(body, call()))["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    (tool_call,) = message["message"]["tool_calls"]
    assert tool_call["function"]["name"] == "get_weather"
    assert orjson.loads(tool_call["function"]["arguments"]) == {"city": "Paris", "days": 5}


async def test_parallel_tool_calls_stream_as_deltas(family: Family) -> None:
    body = stream_body("Oslo now", tools=[WEATHER, TIME])
    chunks = await collect(family.provider().stream_chat(body, call()))
    calls = joined_tool_calls(chunks)
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    assert all(c["id"].startswith("call_") for c in calls)
    assert orjson.loads(calls[1]["arguments"]) == {"tz": "Oslo"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_tool_result_round_trip(family: Family) -> None:
    first = await family.provider().chat(chat_body("Rome", tools=[WEATHER]), call())
    tool_call = first["choices"][0]["message"]["tool_calls"][0]
    body = chat_body("Rome", tools=[WEATHER])
    body["messages"] += [first["choices"][0]["message"],
                         {"role": "tool", "tool_call_id": tool_call["id"], "content": "sunny"}]
    answer = await family.provider().chat(body, call())
    assert answer["choices"][0]["message"]["content"] == "Tool results: sunny"


async def test_json_mode(family: Family) -> None:
    provider = family.provider()
    plain = await provider.chat(chat_body("reply in json", response_format={"type": "json_object"}), call())
    assert orjson.loads(plain["choices"][0]["message"]["content"]) == {"echo": "Echo: reply in json"}
    schema = {"type": "json_schema", "json_schema": {"name": "n", "strict": True, "schema": {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}
    structured = await provider.chat(chat_body("count", response_format=schema), call())
    assert orjson.loads(structured["choices"][0]["message"]["content"]) == {"n": len("Echo: count")}


# -- embeddings, completions, models ---------------------------------------------------


async def test_embeddings_float_and_base64(family: Family) -> None:
    provider = family.provider("text-embedding-3-small")
    assert isinstance(provider, SupportsEmbeddings)
    body = {"model": "public-name", "input": ["a", "b"], "dimensions": 8}
    floats = await provider.embeddings(body, call())
    packed = await provider.embeddings({**body, "encoding_format": "base64"}, call())
    assert [d["index"] for d in floats["data"]] == [0, 1]
    decoded = struct.unpack("<8f", base64.b64decode(packed["data"][1]["embedding"]))
    assert list(decoded) == floats["data"][1]["embedding"]
    assert family.fake.traffic.last.body["encoding_format"] == "base64"


async def test_legacy_completions(family: Family) -> None:
    provider = family.provider("gpt-3.5-turbo-instruct")
    assert isinstance(provider, SupportsCompletions)
    body = {"model": "public-name", "prompt": "Say this", "max_tokens": 5}
    answer = await provider.completions(body, call())
    assert answer["object"] == "text_completion" and answer["choices"][0]["text"] == " Say this indeed."
    chunks = await collect(provider.stream_completions(
        {**body, "stream": True, "stream_options": {"include_usage": True}}, call()))
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == " Say this indeed."
    assert chunks[-1]["usage"]["total_tokens"] > 0


async def test_list_models(family: Family) -> None:
    provider = family.provider()
    assert isinstance(provider, SupportsModelList)
    models = await provider.list_models(call())
    assert "gpt-4o-mini" in {m["id"] for m in models["data"]}


# -- errors ------------------------------------------------------------------------------

ERROR_CASES = [
    (oai.bad_request("temperature"), errors.InvalidRequest, "invalid_type"),
    (oai.bad_auth(), errors.AuthError, "upstream_auth"),
    (oai.not_found(), errors.UpstreamModelNotFound, "upstream_model_not_found"),  # the deployment's model is gone
    (oai.deployment_not_found(), errors.UpstreamModelNotFound, "upstream_model_not_found"),  # Azure's
    (oai.file_not_found(), errors.NotFound, None),  # the client's own input: passed on as it is
    (oai.previous_response_not_found(), errors.NotFound, "previous_response_not_found"),
    (oai.rate_limited(1.5), errors.RateLimited, "rate_limit_exceeded"),
    (oai.insufficient_quota(), errors.QuotaExceeded, "insufficient_quota"),
    (oai.server_error(500), errors.UpstreamError, None),
    (oai.server_error(503), errors.Unavailable, None),
    (oai.error(504, "Gateway timeout.", type_="server_error"), errors.UpstreamTimeout, None),
    (oai.context_length(), errors.ContextLengthExceeded, "context_length_exceeded"),
    (oai.content_filter(), errors.ContentPolicy, "invalid_prompt"),
    (oai.content_filter(azure=True), errors.ContentPolicy, "content_filter"),
]


@pytest.mark.parametrize(("fault", "kind", "code"), ERROR_CASES)
@pytest.mark.parametrize("streaming", [False, True])
async def test_error_mapping(
    family: Family, fault: Fault, kind: type[errors.GatewayError], code: str | None, streaming: bool
) -> None:
    family.fake.faults.push(fault)
    provider = family.provider()
    with pytest.raises(kind) as caught:
        if streaming:
            await collect(provider.stream_chat(stream_body(), call()))
        else:
            await provider.chat(chat_body(), call())
    assert caught.value.code == code
    assert "sk-abc" not in caught.value.message, "key fragments never reach the message"
    if kind is errors.RateLimited and code == "rate_limit_exceeded":
        assert caught.value.retry_after == 1.5  # retry-after-ms wins over whole-second Retry-After


async def test_retry_after_seconds_header(family: Family) -> None:
    family.fake.faults.push(oai.rate_limited(3, ms_header=False))
    with pytest.raises(errors.RateLimited) as caught:
        await family.provider().chat(chat_body(), call())
    assert caught.value.retry_after == 3.0


@pytest.mark.parametrize("value", ["inf", "1e999", "nan", "-inf"])
def test_a_retry_after_that_is_no_finite_number_is_ignored(value: str) -> None:
    # an infinite wait would reach the client as a Retry-After header math.ceil cannot write
    assert parse_retry_after({"retry-after": value}) is None
    assert parse_retry_after({"retry-after-ms": value}) is None
    assert parse_retry_after({"retry-after-ms": value, "retry-after": "2"}) == 2.0


def test_a_retry_after_given_as_an_http_date_is_the_seconds_until_then() -> None:
    in_30_s = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (parse_retry_after({"retry-after": in_30_s}) or 0) <= 30
    assert parse_retry_after({"retry-after": email.utils.formatdate(time.time() - 60, usegmt=True)}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None


async def test_real_rejections_are_mapped(family: Family) -> None:
    with pytest.raises(errors.AuthError) as caught:
        await family.provider(api_key="wrong-key-123").chat(chat_body(), call())
    assert caught.value.status == 502 and "wrong-key" not in str(caught.value)
    with pytest.raises(errors.ContextLengthExceeded):
        await family.provider("tiny-context").chat(chat_body("word " * 50), call())


@pytest.mark.parametrize(("fault", "kind"), [
    (Fault.status_only(502, "<html>bad gateway</html>"), errors.UpstreamError),
    (Fault.status_only(503, "upstream connect error"), errors.Unavailable),
    (Fault.status_only(404, "<html>not found</html>"), errors.UpstreamError),
])
async def test_non_json_error_bodies(family: Family, fault: Fault, kind: type[errors.GatewayError]) -> None:
    family.fake.faults.push(fault)
    with pytest.raises(kind) as caught:
        await family.provider().chat(chat_body(), call())
    assert "html" not in caught.value.message and caught.value.detail


async def test_non_json_200_body(family: Family) -> None:
    family.fake.faults.push(Fault.non_json_body())
    with pytest.raises(errors.UpstreamError, match="not JSON"):
        await family.provider().chat(chat_body(), call())
    family.fake.faults.push(Fault.non_json_body())
    with pytest.raises(errors.UpstreamError, match="not JSON"):
        await collect(family.provider().stream_chat(stream_body(), call()))


# -- broken streams --------------------------------------------------------------------


async def test_cut_stream_raises_after_the_chunks_it_got(family: Family) -> None:
    family.fake.faults.push(Fault(cut_after=3, chunk_delay=0.02))
    got: list[object] = []
    with pytest.raises(errors.UpstreamError, match="closed the connection"):
        async for chunk in family.provider().stream_chat(stream_body(), call()):
            got.append(chunk)
    # chunks already delivered were forwarded; one arriving with the reset may be lost
    assert 2 <= len(got) <= 3


async def test_stream_without_done_marker_raises(family: Family) -> None:
    family.fake.faults.push(Fault(no_done=True))
    with pytest.raises(errors.UpstreamError, match=r"\[DONE\]"):
        await collect(family.provider().stream_chat(stream_body(), call()))


@pytest.mark.parametrize(("fault", "kind"), [
    (oai.stream_error(after=2), errors.UpstreamError),
    (oai.stream_error(after=1, message="Rate limit reached", type_="tokens", code="rate_limit_exceeded"),
     errors.RateLimited),
    (oai.stream_error(after=0, message="Invalid prompt", type_="invalid_request_error",
                      code="invalid_prompt"), errors.ContentPolicy),
])
async def test_stream_error_event(family: Family, fault: Fault, kind: type[errors.GatewayError]) -> None:
    family.fake.faults.push(fault)
    with pytest.raises(kind):
        await collect(family.provider().stream_chat(stream_body(), call()))


# -- timeouts and cancellation -----------------------------------------------------------


async def test_total_timeout(family: Family) -> None:
    family.fake.faults.push(Fault.slow(headers=1.0))
    with pytest.raises(errors.UpstreamTimeout):
        await family.provider().chat(chat_body(), call(total=0.15))
    family.fake.faults.push(Fault.slow(between=0.1))
    with pytest.raises(errors.UpstreamTimeout):
        await collect(family.provider().stream_chat(stream_body("a b c d e f g"), call(total=0.25)))


async def test_first_token_timeout(family: Family) -> None:
    family.fake.faults.push(Fault.slow(first_chunk=1.0))
    with pytest.raises(errors.UpstreamTimeout):
        await collect(family.provider().stream_chat(stream_body(), call(first_token=0.15)))
    family.fake.faults.push(Fault.slow(headers=1.0))
    with pytest.raises(errors.UpstreamTimeout):
        await collect(family.provider().stream_chat(stream_body(), call(first_token=0.15)))


async def test_stalled_upstream_times_out_and_is_let_go(family: Family) -> None:
    family.fake.faults.push(Fault.stall_forever())
    with pytest.raises(errors.UpstreamTimeout):
        await family.provider().chat(chat_body(), call(total=0.15))
    assert await family.fake.traffic.wait_for("disconnects", 1) == 1


async def test_cancelling_the_consumer_closes_the_upstream_request(family: Family) -> None:
    family.fake.faults.push(Fault.slow(between=0.05))
    got = asyncio.Event()

    async def consume() -> None:
        async for _ in family.provider().stream_chat(stream_body("a b c d e f g h i j"), call()):
            got.set()

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(got.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await family.fake.traffic.wait_for("disconnects", 1) == 1
    assert family.fake.traffic.completed == 0


async def test_closing_an_unfinished_stream_closes_the_upstream_request(family: Family) -> None:
    family.fake.faults.push(Fault.slow(between=0.05))
    stream = family.provider().stream_chat(stream_body("a b c d e f g h i j"), call())
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert await family.fake.traffic.wait_for("disconnects", 1) == 1


@pytest.fixture
def unaccepting_port() -> Iterator[int]:
    with black_hole() as port:
        yield port


async def test_connect_timeout(unaccepting_port: int, clients: HttpClients) -> None:
    deployment = Deployment(name="x", provider="openai", model="gpt-4o-mini",
                            api_base=f"http://127.0.0.1:{unaccepting_port}/v1", api_key="k")
    with pytest.raises(errors.UpstreamTimeout):
        await build(deployment, clients).chat(chat_body(), call(connect=0.15))


async def test_connection_refused_is_unavailable(clients: HttpClients) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    deployment = Deployment(name="x", provider="openai", api_base=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(errors.Unavailable):
        await build(deployment, clients).chat(chat_body(), call())


# -- OpenAI specifics ------------------------------------------------------------------


async def test_reasoning_models_get_max_completion_tokens(fake_openai: FakeOpenAI, clients: HttpClients) -> None:
    deployment = Deployment(name="r", provider="openai", model="o3-mini", api_base=fake_openai.base_url,
                            api_key="sk-test-key")
    answer = await build(deployment, clients).chat(chat_body("a b c d", max_tokens=2), call())
    assert answer["choices"][0]["finish_reason"] == "length"
    sent = fake_openai.traffic.last.body
    assert sent["max_completion_tokens"] == 2 and "max_tokens" not in sent


async def test_headers_forwarded_but_auth_kept(fake_openai: FakeOpenAI, clients: HttpClients) -> None:
    deployment = Deployment(name="h", provider="openai", model="gpt-4o-mini", api_base=fake_openai.base_url,
                            api_key="sk-test-key", headers={"OpenAI-Organization": "org-1"})
    options = call(traceparent="00-abc-def-01", Authorization="Bearer smuggled")
    await build(deployment, clients).chat(chat_body(), options)
    headers = fake_openai.traffic.last.headers
    assert headers["traceparent"] == "00-abc-def-01"
    assert headers["OpenAI-Organization"] == "org-1"
    assert headers["Authorization"] == "Bearer sk-test-key"


async def test_stream_request_flags_are_forced(fake_openai: FakeOpenAI, clients: HttpClients) -> None:
    """chat() never streams and stream_chat() always does, whatever the body says."""
    deployment = Deployment(name="f", provider="openai", model="gpt-4o-mini", api_base=fake_openai.base_url,
                            api_key="sk-test-key")
    provider = build(deployment, clients)
    await provider.chat(stream_body(), call())  # stream_options without stream would be a 400
    assert "stream" not in fake_openai.traffic.last.body
    chunks = await collect(provider.stream_chat(chat_body(), call()))
    assert joined_text(chunks) == "Echo: hello there"


# -- the fake itself (other suites script faults through it) ---------------------------------


def test_fault_script_order_paths_and_standing_fault() -> None:
    script = FaultScript()
    models_only, first, second = Fault(status=500, only="/models"), Fault.cut(1), Fault.cut(2)
    script.push(models_only)
    script.push(first, second, times=2)
    assert script.take("/v1/chat/completions") is first
    assert script.take("/v1/models") is models_only
    assert [script.take("/x") for _ in range(3)] == [second, first, second]
    assert script.take("/x") is None
    script.always(second)
    assert script.take("/x") is second and script.take("/y") is second
    script.clear()
    assert script.take("/x") is None and script.pending() == 0


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ({"messages": [{"role": "user", "content": "x"}]}, 400, "you must provide a model parameter"),
    ({"model": "gpt-4o-mini"}, 400, "Missing required parameter: 'messages'"),
    ({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}, 404, "model_not_found"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}],
      "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ({"model": "o3-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5}, 400,
     "max_completion_tokens"),
])
async def test_fake_rejects_what_openai_rejects(
    fake_openai: FakeOpenAI, body: dict[str, object], status: int, fragment: str
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(fake_openai.base_url + "/chat/completions", json=body,
                                headers={"Authorization": "Bearer sk-test-key"}) as resp:
            assert resp.status == status
            assert resp.headers["x-request-id"].startswith("req_")
            assert fragment in await resp.text()
        async with session.post(fake_openai.base_url + "/chat/completions", json=body) as resp:
            assert resp.status == 401


async def test_failed_tool_result_from_an_anthropic_client_says_so(family: Family) -> None:
    """A ``tool_result`` with ``is_error: true`` has no twin in OpenAI's tool messages: the upstream (the model)
    still reads that the tool failed, and a successful result is sent untouched."""
    use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
    body = parse_messages({"model": "public-name", "max_tokens": 50, "messages": [
        {"role": "user", "content": "Weather in Oslo and Bergen?"},
        {"role": "assistant", "content": [use, {**use, "id": "toolu_2", "input": {"city": "Bergen"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "city service timed out", "is_error": True},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "4 C, rain"},
        ]},
    ]}).body
    await family.provider().chat(body, call())
    tools = [m for m in family.fake.traffic.last.body["messages"] if m["role"] == "tool"]
    assert tools == [{"role": "tool", "tool_call_id": "toolu_1", "content": "Error: city service timed out"},
                     {"role": "tool", "tool_call_id": "toolu_2", "content": "4 C, rain"}]


def test_a_429_with_only_the_rate_limit_headers_waits_until_the_exhausted_limit_resets() -> None:
    """OpenAI-compatible servers (and OpenAI's 429s at times) say when a limit frees only in x-ratelimit-reset-*:
    read as no Retry-After, the router waited its default second and met the 429 again and again."""
    tokens_out = {"x-ratelimit-remaining-requests": "499", "x-ratelimit-reset-requests": "120ms",
                  "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6.5s"}
    assert parse_retry_after(tokens_out) == 6.5  # the limit that is out, not the other one
    requests_out = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m0s",
                    "x-ratelimit-reset-tokens": "20ms"}
    assert parse_retry_after(requests_out) == 60.0
    both_out = {**requests_out, "x-ratelimit-remaining-tokens": "0"}
    assert parse_retry_after(both_out) == 60.0  # the later of the two
    # every answer carries these: a 5xx with limits that have room says nothing of a wait
    assert parse_retry_after({"x-ratelimit-remaining-tokens": "900", "x-ratelimit-reset-tokens": "6m0s"}) is None
    assert parse_retry_after({**tokens_out, "retry-after": "3"}) == 3.0  # an explicit Retry-After rules
    assert parse_retry_after({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "soon"}) is None
