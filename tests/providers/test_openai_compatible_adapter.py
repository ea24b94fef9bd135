"""OpenAI-compatible servers: quirk switches, keyless local servers, error-body variants.

Each quirk is checked against a fake that behaves like the servers needing it (it
rejects the parameter or role) and passes once the quirk is switched on. The shared
scenarios run for openai_compatible in test_openai_adapter.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from aigw import errors
from aigw.config.models import Deployment
from aigw.providers.http import HttpClients
from aigw.providers.openai_compatible.client import build
from aigw.providers.openai_compatible.quirks import parse_quirks
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI
from tests.providers.openai_family import call, chat_body, collect, joined_text, stream_body
from tests.support.servers import start_aiohttp_app


@pytest.fixture(scope="module")
def strict_server() -> Iterator[FakeOpenAI]:
    """A keyless local server that rejects stream_options, seed, developer and a second system message,
    and always reports usage on the finishing chunk (as several do)."""
    fake = FakeOpenAI(
        api_key=None,
        reject_params=frozenset({"stream_options", "seed", "parallel_tool_calls", "max_completion_tokens", "user"}),
        reject_roles=frozenset({"developer"}),
        single_system=True,
        usage_in_final_chunk=True,
    ).start()
    yield fake
    fake.stop()


@pytest.fixture
def strict(strict_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    strict_server.reset()
    yield strict_server
    strict_server.reset()


def compat(fake: FakeOpenAI, clients: HttpClients, quirks: dict[str, Any] | None = None, **overrides: Any) -> Any:
    fields: dict[str, Any] = {"name": "local", "provider": "openai_compatible", "model": "gpt-4o-mini",
                              "api_base": fake.base_url, "quirks": quirks or {}}
    return build(Deployment(**{**fields, **overrides}), clients)


async def test_keyless_server_gets_no_authorization(strict: FakeOpenAI, clients: HttpClients) -> None:
    await compat(strict, clients).chat(chat_body(), call())
    assert "Authorization" not in strict.traffic.last.headers


async def test_auth_header_quirk(strict: FakeOpenAI, clients: HttpClients) -> None:
    await compat(strict, clients, {"auth_header": "x-api-key"}, api_key="k-1").chat(chat_body(), call())
    headers = strict.traffic.last.headers
    assert headers["x-api-key"] == "k-1" and "Authorization" not in headers
    await compat(strict, clients, {"no_auth": True}, api_key="k-1").chat(chat_body(), call())
    assert "Authorization" not in strict.traffic.last.headers


async def test_without_quirks_the_strict_server_refuses(strict: FakeOpenAI, clients: HttpClients) -> None:
    with pytest.raises(errors.InvalidRequest, match="stream_options"):
        await collect(compat(strict, clients).stream_chat(stream_body(), call()))


async def test_no_stream_options_still_ends_with_usage(strict: FakeOpenAI, clients: HttpClients) -> None:
    provider = compat(strict, clients, {"no_stream_options": True})
    chunks = await collect(provider.stream_chat(stream_body("a b"), call()))
    assert "stream_options" not in strict.traffic.last.body
    assert joined_text(chunks) == "Echo: a b"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert chunks[-1]["id"] == chunks[0]["id"]
    assert all(c.get("usage") is None for c in chunks[:-1]), "usage is reported once, last"


async def test_drop_params(strict: FakeOpenAI, clients: HttpClients) -> None:
    body = chat_body(seed=7, parallel_tool_calls=False, temperature=0.2)
    with pytest.raises(errors.InvalidRequest, match="Unrecognized request argument"):
        await compat(strict, clients).chat(body, call())
    await compat(strict, clients, {"drop_params": ["seed", "parallel_tool_calls"]}).chat(body, call())
    sent = strict.traffic.last.body
    assert "seed" not in sent and "parallel_tool_calls" not in sent and sent["temperature"] == 0.2


async def test_max_tokens_field(strict: FakeOpenAI, clients: HttpClients) -> None:
    provider = compat(strict, clients, {"max_tokens_field": "max_tokens"})
    answer = await provider.chat(chat_body("a b c", max_completion_tokens=2), call())
    assert answer["choices"][0]["finish_reason"] == "length"
    assert strict.traffic.last.body["max_tokens"] == 2


async def test_developer_role_and_system_merging(strict: FakeOpenAI, clients: HttpClients) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "developer", "content": "No emoji."},
                {"role": "user", "content": "hi"}]
    body = {"model": "local", "messages": messages}
    with pytest.raises(errors.InvalidRequest):
        await compat(strict, clients, {"no_developer_role": True}).chat(body, call())
    quirks = {"no_developer_role": True, "merge_system_messages": True}
    answer = await compat(strict, clients, quirks).chat(body, call())
    assert answer["choices"][0]["message"]["content"] == "Echo: hi"
    assert strict.traffic.last.body["messages"] == [
        {"role": "system", "content": "Be brief.\n\nNo emoji."}, {"role": "user", "content": "hi"}]
    assert body["messages"] is messages and messages[1]["role"] == "developer", "caller's body unchanged"


@pytest.mark.parametrize(("status", "body", "kind"), [
    (400, {"object": "error", "message": "This model's maximum context length is 4096 tokens. However,"
           " you requested 5000 tokens.", "type": "BadRequestError", "param": None, "code": 400},
     errors.ContextLengthExceeded),
    (404, {"error": "model 'llama3:70b' not found, try pulling it first"}, errors.UpstreamModelNotFound),  # Ollama
    (404, {"error": {"message": 'model "llama3:70b" not found, try pulling it first', "type": "not_found_error",
                     "param": None, "code": None}}, errors.UpstreamModelNotFound),  # Ollama's OpenAI API
    (404, {"error": {"message": 'model "llama3:70b" not found, try pulling it first', "type": "api_error",
                     "param": None, "code": None}}, errors.UpstreamModelNotFound),  # the same, older releases
    (404, {"object": "error", "message": "The model `llama-3-70b` does not exist.", "type": "NotFoundError",
           "param": None, "code": 404}, errors.UpstreamModelNotFound),  # vLLM
    (404, {"error": {"message": "The model `llama-3-70b` does not exist.", "type": "NotFoundError",
                     "param": None, "code": 404}}, errors.UpstreamModelNotFound),  # vLLM, newer releases
    (404, {"object": "error", "message": "Not Found", "type": "NotFoundError", "param": None, "code": 404},
     errors.NotFound),  # any other 404 stays one
    (429, {"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-min."}}, errors.RateLimited),
    (422, {"detail": "Invalid request: messages.0.content"}, errors.InvalidRequest),
])
async def test_error_body_variants(
    strict: FakeOpenAI, clients: HttpClients, status: int, body: Any, kind: type[errors.GatewayError]
) -> None:
    strict.faults.push(Fault(status=status, body=body))
    with pytest.raises(kind):
        await compat(strict, clients).chat(chat_body(), call())


async def test_stream_error_event_with_numeric_code(strict: FakeOpenAI, clients: HttpClients) -> None:
    strict.faults.push(Fault(cut_after=1, stream_error={"error": {"code": 503, "message": "overloaded"}}))
    with pytest.raises(errors.Unavailable):
        await collect(compat(strict, clients, {"no_stream_options": True}).stream_chat(stream_body(), call()))


async def test_error_chunk_with_choices_is_still_an_error(strict: FakeOpenAI, clients: HttpClients) -> None:
    """OpenRouter's mid-stream errors look like chunks (with a finish_reason "error")."""
    event = {"id": "gen-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "error": {"code": 502, "message": "Provider returned error"},
             "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]}
    strict.faults.push(Fault(cut_after=2, stream_error=event))
    with pytest.raises(errors.UpstreamError, match="Provider returned error"):
        await collect(compat(strict, clients, {"no_stream_options": True}).stream_chat(stream_body(), call()))


@pytest.mark.parametrize(("quirks", "message"), [
    ({"no_stream_option": True}, "quirks.no_stream_option"),
    ({"no_stream_options": "yes"}, "quirks.no_stream_options"),
    ({"max_tokens_field": "tokens"}, "quirks.max_tokens_field"),
    ({"drop_params": ["messages"]}, "cannot drop messages"),
    ({"auth_header": "bad header"}, "quirks.auth_header"),
])
def test_bad_quirks_fail_at_build(clients: HttpClients, quirks: dict[str, Any], message: str) -> None:
    deployment = Deployment(name="local", provider="openai_compatible", api_base="http://127.0.0.1:1/v1",
                            quirks=quirks)
    with pytest.raises(ValueError, match=message) as caught:
        build(deployment, clients)
    assert "'local'" in str(caught.value) and "known quirks" in str(caught.value)


def test_api_base_is_required(clients: HttpClients) -> None:
    with pytest.raises(ValueError, match="api_base is required"):
        build(Deployment(name="local", provider="openai_compatible"), clients)


class GeminiLike(FakeOpenAI):
    """Gemini's OpenAI-compatible endpoint: ``finish_reason: "stop"`` on a message that calls tools."""

    def decorate(self, op: str, result: Any, stream: bool) -> Any:
        for part in result if stream else [result]:
            for choice in part.get("choices") or ():
                if choice.get("finish_reason") == "tool_calls":
                    choice["finish_reason"] = "stop"
        return result


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeOpenAI]:
    fake = GeminiLike(api_key=None).start()
    yield fake
    fake.stop()


WEATHER: Any = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


async def test_tool_calls_finish_reason_quirk(gemini: FakeOpenAI, clients: HttpClients) -> None:
    """Agent loops run tools only on ``finish_reason: "tool_calls"``; a plain answer keeps its ``stop``."""
    plain = compat(gemini, clients)
    answer = await plain.chat(chat_body(tools=[WEATHER]), call())
    assert answer["choices"][0]["finish_reason"] == "stop"  # what Gemini says, without the quirk
    fixed = compat(gemini, clients, {"tool_calls_finish_reason": True})
    answer = await fixed.chat(chat_body(tools=[WEATHER]), call())
    assert answer["choices"][0]["message"]["tool_calls"] and answer["choices"][0]["finish_reason"] == "tool_calls"
    chunks = await collect(fixed.stream_chat(stream_body(tools=[WEATHER]), call()))
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")]
    assert finishes[-1] == "tool_calls" and set(finishes[:-1]) == {None}
    answer = await fixed.chat(chat_body(), call())
    assert answer["choices"][0]["finish_reason"] == "stop"
    chunks = await collect(fixed.stream_chat(stream_body(), call()))
    assert [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")][-1] == "stop"


@pytest.mark.parametrize(("api_base", "quirks", "expected"), [
    ("https://generativelanguage.googleapis.com/v1beta/openai", {}, True),
    ("https://generativelanguage.googleapis.com/v1beta/openai", {"tool_calls_finish_reason": False}, False),
    ("https://example.test/v1", {}, False),
])
def test_geminis_host_gets_the_tool_calls_quirk_without_config(api_base: str, quirks: dict[str, Any],
                                                               expected: bool) -> None:
    deployment = Deployment(name="gemini", provider="openai_compatible", model="gemini-2.5-flash",
                            api_base=api_base, quirks=quirks)
    assert parse_quirks(deployment).tool_calls_finish_reason is expected


async def test_request_validation_error_of_a_fastapi_server(strict: FakeOpenAI, clients: HttpClients) -> None:
    """FastAPI/pydantic servers (llama-cpp-python, LocalAI, older vLLM) answer 422 with ``detail`` as a list:
    the client's bad request, not a broken upstream (it was a retried 502 "is api_base right?")."""
    body = {"detail": [{"type": "missing", "loc": ["body", "messages", 0, "content"], "msg": "Field required",
                        "input": {"role": "user", "secret prompt": "x"}}]}
    strict.faults.push(Fault(status=422, body=body))
    with pytest.raises(errors.InvalidRequest) as caught:
        await compat(strict, clients).chat(chat_body(), call())
    assert caught.value.status == 400
    assert "messages.0.content: Field required" in caught.value.message
    assert "secret prompt" not in caught.value.message


_EXTRA = {"type": "extra_forbidden", "loc": ["body", "messages", 1, "assistant", "reasoning_content"],
          "msg": "Extra inputs are not permitted", "input": "secret thoughts"}


@pytest.mark.parametrize("body", [
    {"object": "error", "message": {"detail": [_EXTRA]}, "type": "invalid_request_error", "param": None,
     "code": None},
    {"object": "Error", "detail": [_EXTRA], "message": [_EXTRA], "type": "invalid_request_error", "code": 3001},
], ids=["message-object", "message-list"])
async def test_mistral_validation_error_says_which_field(
        strict: FakeOpenAI, clients: HttpClients, body: Any) -> None:
    """Mistral's 422 puts pydantic's problems in ``message`` (an object or a list, not a string): the client
    saw only "upstream returned HTTP 422", with no word of the field Mistral refused."""
    strict.faults.push(Fault(status=422, body=body))
    with pytest.raises(errors.InvalidRequest) as caught:
        await compat(strict, clients).chat(chat_body(), call())
    message = caught.value.message
    assert "messages.1.assistant.reasoning_content: Extra inputs are not permitted" in message
    assert "secret thoughts" not in message


async def test_processing_comments_do_not_hold_off_the_first_token_timeout(clients: HttpClients) -> None:
    """OpenRouter sends ``: OPENROUTER PROCESSING`` comments while a request waits for a provider: the first
    token must still come within ``first_token`` (the router then falls back), however many comments come
    first. Each comment restarted the wait, so the call hung until the upstream answered or ``total`` ended."""

    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(40):  # 4 s of comments, one every 0.1 s, then the answer
            await resp.write(b": OPENROUTER PROCESSING\n\n")
            await asyncio.sleep(0.1)
        await resp.write(b'data: {"id":"gen-1","object":"chat.completion.chunk","created":1,"model":"m",'
                         b'"choices":[{"index":0,"delta":{"content":"late"},"finish_reason":"stop"}]}\n\n'
                         b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/api/v1/chat/completions", handle)
    server = start_aiohttp_app(app, "fake-openrouter")
    try:
        provider = build(Deployment(name="or", provider="openai_compatible", model="m",
                                    api_base=server.url + "/api/v1"), clients)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(errors.UpstreamTimeout):
            await collect(provider.stream_chat(stream_body(), call(first_token=0.5, total=10.0)))
        assert loop.time() - started < 2.0
    finally:
        server.stop()


async def test_drop_params_holds_for_completions_and_embeddings(strict: FakeOpenAI, clients: HttpClients) -> None:
    """``drop_params`` names keys the server rejects: it held for chat only, so a legacy completion or an
    embedding carrying one (the OpenAI SDK sends ``encoding_format`` on every embedding) was refused."""
    quirks = {"drop_params": ["seed", "user"]}
    provider = compat(strict, clients, quirks, model="gpt-3.5-turbo-instruct")
    answer = await provider.completions({"model": "local", "prompt": "hi", "seed": 7, "max_tokens": 3}, call())
    assert answer["choices"] and "seed" not in strict.traffic.last.body
    chunks = await collect(provider.stream_completions(
        {"model": "local", "prompt": "hi", "seed": 7, "stream": True}, call()))
    assert chunks and "seed" not in strict.traffic.last.body
    embedder = compat(strict, clients, quirks, model="text-embedding-3-small")
    embedded = await embedder.embeddings({"model": "local", "input": "hi", "user": "u-1"}, call())
    assert embedded["data"] and "user" not in strict.traffic.last.body


def _reasoning_server() -> Any:
    """vLLM >= 0.17 (and OpenRouter, Ollama, Groq) send the chain of thought as ``reasoning``, not DeepSeek's
    ``reasoning_content``."""
    head = {"id": "chatcmpl-r", "object": "chat.completion.chunk", "created": 1, "model": "qwen3"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + orjson.dumps(body) + b"\n\n"

    async def handle(request: web.Request) -> web.StreamResponse:
        if not (await request.json()).get("stream"):
            message = {"role": "assistant", "content": "4", "reasoning": "2+2 is 4"}
            return web.json_response({"id": "chatcmpl-r", "object": "chat.completion", "created": 1,
                                      "model": "qwen3", "choices": [{"index": 0, "message": message,
                                                                     "finish_reason": "stop"}]})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for piece in (chunk({"role": "assistant", "content": ""}), chunk({"reasoning": "2+2"}),
                      chunk({"reasoning": " is 4"}), chunk({"content": "4"}), chunk({}, "stop"), b"data: [DONE]\n\n"):
            await resp.write(piece)
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    return start_aiohttp_app(app, "fake-vllm")


async def test_reasoning_field_is_read_as_reasoning_content(clients: HttpClients) -> None:
    """The gateway reads thinking from ``reasoning_content`` (Anthropic clients' thinking blocks, the cache,
    token counts): a server's ``reasoning`` was passed on unseen, and Anthropic clients got no thinking."""
    server = _reasoning_server()
    try:
        provider = build(Deployment(name="q", provider="openai_compatible", model="qwen3",
                                    api_base=server.url + "/v1"), clients)
        answer = await provider.chat(chat_body(), call())
        message = answer["choices"][0]["message"]
        assert (message["reasoning_content"], message["reasoning"]) == ("2+2 is 4", "2+2 is 4")
        chunks = await collect(provider.stream_chat(stream_body(), call()))
        thoughts = [c["choices"][0]["delta"].get("reasoning_content") for c in chunks if c["choices"]]
        assert "".join(t or "" for t in thoughts) == "2+2 is 4"
        assert joined_text(chunks) == "4"
    finally:
        server.stop()
