"""The anthropic SDK in front of OpenAI-compatible servers (vLLM, Ollama, ...) calling tools: a scripted server
answers in OpenAI's wire format what each test sets, and checks strict schemas as OpenAI's strict mode does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import orjson
import pytest
from aiohttp import web
from pydantic import BaseModel

from tests.support.gateway import running_gateway
from tests.support.servers import start_aiohttp_app

CALLS: Any = [{"id": f"call_{c}", "type": "function",
               "function": {"name": "get_weather", "arguments": f'{{"city": "{city}"}}'}}
              for c, city in (("a", "Oslo"), ("b", "Rome"))]
WEATHER_TOOL: Any = {"name": "get_weather",
                     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def compat_answer(finish: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(whole answer, chunks) of an OpenAI-compatible server calling two tools with this finish_reason."""
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "local"}
    usage = {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    message = {"role": "assistant", "content": None, "tool_calls": CALLS}
    whole = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "local", "usage": usage,
             "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    deltas = [{"role": "assistant", "content": None}]
    deltas += [{"tool_calls": [{"index": i, **call}]} for i, call in enumerate(CALLS)]
    chunks = [{**head, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks += [{**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
               {**head, "choices": [], "usage": usage}]
    return whole, chunks


def _strict_problem(schema: Any) -> str | None:
    """What OpenAI's strict mode refuses in a schema: an object not closed, or not requiring every property."""
    if isinstance(schema, list):
        return next((p for p in map(_strict_problem, schema) if p), None)
    if not isinstance(schema, dict):
        return None
    if schema.get("type") == "object":
        if schema.get("additionalProperties") is not False:
            return "'additionalProperties' is required to be supplied and to be false."
        missing = sorted(set(schema.get("properties") or {}) - set(schema.get("required") or ()))
        if missing:
            return ("'required' is required to be supplied and to be an array including every key in "
                    f"properties. Missing '{missing[0]}'.")
    subs = [*(schema.get("properties") or {}).values(), *(schema.get("$defs") or {}).values()]
    return _strict_problem([*subs, schema.get("items"), schema.get("anyOf")])


def strict_refusal(body: dict[str, Any]) -> str | None:
    """OpenAI's 400 message for a strict response_format or tool whose schema strict mode cannot hold."""
    spec = (body.get("response_format") or {}).get("json_schema") or {}
    named = [(f"response_format '{spec.get('name')}'", spec)]
    named += [(f"function '{t['function']['name']}'", {**t["function"], "schema": t["function"].get("parameters")})
              for t in body.get("tools") or ()]
    for what, item in named:
        problem = _strict_problem(item.get("schema")) if item.get("strict") else None
        if problem:
            return f"Invalid schema for {what}: In context=(), {problem}"
    return None


class ScriptedCompat:
    """An OpenAI-compatible server (vLLM, Ollama, ...) answering what the test scripts, in OpenAI's wire format."""

    def __init__(self) -> None:
        self.whole: dict[str, Any] = {}
        self.chunks: list[dict[str, Any]] = []
        self.last: dict[str, Any] = {}
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self.server = start_aiohttp_app(app, "scripted-compat")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.last = body = await request.json()
        refused = strict_refusal(body)
        if refused:  # as OpenAI answers a strict schema it cannot hold
            return web.json_response({"error": {"message": refused, "type": "invalid_request_error",
                                                "param": None, "code": None}}, status=400)
        if not body.get("stream"):
            return web.json_response(self.whole)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in self.chunks:
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp


@pytest.fixture(scope="module")
def compat() -> Iterator[tuple[ScriptedCompat, anthropic.Anthropic]]:
    fake = ScriptedCompat()
    prices = {"input_per_mtok": 0, "output_per_mtok": 0}
    cfg: dict[str, Any] = {"models": [{"name": "local", "provider": "openai_compatible", "model": "local",
                                       "api_base": fake.server.url + "/v1", "prices": prices}],
                           "routing": {"*": {"num_retries": 0}}, "circuit_breaker": {"enabled": False}}
    with running_gateway(cfg) as g:
        yield fake, anthropic.Anthropic(base_url=g.url, api_key="k", max_retries=0)
    fake.server.stop()


@pytest.mark.parametrize("finish", ["stop", "tool_calls"])
def test_tool_calls_end_with_tool_use_whatever_the_server_said(
    compat: tuple[ScriptedCompat, anthropic.Anthropic], finish: str
) -> None:
    """Some OpenAI-compatible servers (vLLM, Ollama, LM Studio) end a tool-calling answer with finish_reason
    "stop": an Anthropic client got stop_reason "end_turn" beside tool_use blocks, and an agent loop that waits
    for "tool_use" stopped without running the tools. A message with tool_use blocks ends with "tool_use"."""
    fake, client = compat
    fake.whole, fake.chunks = compat_answer(finish)
    ask: Any = [{"role": "user", "content": "Weather in Oslo and Rome?"}]
    msg = client.messages.create(model="local", max_tokens=100, tools=[WEATHER_TOOL], messages=ask)
    assert msg.stop_reason == "tool_use" and [b.type for b in msg.content] == ["tool_use", "tool_use"]
    with client.messages.stream(model="local", max_tokens=100, tools=[WEATHER_TOOL], messages=ask) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.id, b.input) for b in final.content if b.type == "tool_use"] == [
        ("call_a", {"city": "Oslo"}), ("call_b", {"city": "Rome"})]


def test_a_stream_that_ends_inside_a_tool_call_ends_with_an_error(
    compat: tuple[ScriptedCompat, anthropic.Anthropic]
) -> None:
    """A server that closes its stream (with [DONE]) mid tool call, without a finish_reason: the Anthropic client
    got message_delta with a stop_reason and message_stop, a clean end with half the arguments. It gets an
    error event instead, as for a cut connection."""
    fake, client = compat
    _, chunks = compat_answer("tool_calls")
    half = {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"ci'}}
    fake.chunks = [chunks[0], {**chunks[1], "choices": [{"index": 0, "delta": {"tool_calls": [half]},
                                                         "finish_reason": None}]}]
    ask: Any = [{"role": "user", "content": "Weather in Oslo?"}]
    events: list[str] = []
    with (pytest.raises(anthropic.APIStatusError) as err,
          client.messages.stream(model="local", max_tokens=100, tools=[WEATHER_TOOL], messages=ask) as stream):
        events += [event.type for event in stream]
    assert "message_stop" not in events and "message_delta" not in events
    assert err.value.body["error"]["type"] == "api_error"  # type: ignore[index]


class Place(BaseModel):
    city: str
    zip: str | None = None  # optional: strict mode on OpenAI would want it required


def test_anthropic_structured_output_and_strict_tools_on_an_openai_server(
    compat: tuple[ScriptedCompat, anthropic.Anthropic]
) -> None:
    """messages.parse(output_format=Model) and strict tools from the anthropic SDK were sent to an OpenAI-style
    server as strict schemas; a model with an optional field is one strict mode refuses ("'required' is required
    to be supplied and to be an array including every key in properties"): the client got a 400. Such a
    schema goes without strict (OpenAI still follows it); one strict mode can hold keeps strict."""
    fake, client = compat
    fake.whole = {**compat_answer("stop")[0], "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": '{"city": "Oslo", "zip": null}'}}]}
    ask: Any = [{"role": "user", "content": "Where?"}]
    msg = client.messages.parse(model="local", max_tokens=100, messages=ask, output_format=Place)
    assert msg.parsed_output == Place(city="Oslo")
    assert fake.last["response_format"]["json_schema"]["schema"]["properties"]["zip"]
    tool = {"name": "find", "strict": True, "input_schema": Place.model_json_schema()}
    client.messages.create(model="local", max_tokens=100, messages=ask, tools=[tool])  # type: ignore[list-item]
    closed = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    client.messages.create(model="local", max_tokens=100, messages=ask,
                           tools=[{"name": "find", "strict": True, "input_schema": closed}])  # type: ignore[list-item]
    assert fake.last["tools"][0]["function"]["strict"] is True  # a schema strict mode holds keeps it
