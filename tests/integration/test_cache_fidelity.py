"""A cached answer is the answer: a hit, plain or streamed, carries what the miss carried.

The upstream is a scripted OpenAI (the wire format of api.openai.com) whose answers have
the less common parts: a legacy ``function_call``, ``annotations`` (url citations from web
search), a refusal. Each is asked once plain and once streamed, in both orders, through
the official OpenAI SDK; the hit must equal what a live answer of that kind looks like.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web
from openai.lib.streaming.chat import ChatCompletionStreamState

from tests.support.gateway import RunningGateway, running_gateway
from tests.support.servers import start_aiohttp_app

JSON = dict[str, Any]
CITATION = {"type": "url_citation", "url_citation": {"start_index": 0, "end_index": 5, "title": "Paris weather",
                                                     "url": "https://weather.example.com/paris"}}
FUNCTION = {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}
# the last user message picks the answer: (message, finish_reason, the stream's deltas)
SCRIPTS: dict[str, tuple[JSON, str, list[JSON]]] = {
    "function": (
        {"role": "assistant", "content": None, "function_call": FUNCTION, "refusal": None, "annotations": []},
        "function_call",
        [{"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": ""},
          "refusal": None}]
        + [{"function_call": {"arguments": FUNCTION["arguments"][i:i + 7]}}
           for i in range(0, len(FUNCTION["arguments"]), 7)],
    ),
    "search": (
        {"role": "assistant", "content": "Sunny, 21 C.", "refusal": None, "annotations": [CITATION]},
        "stop",
        [{"role": "assistant", "content": "", "refusal": None}, {"content": "Sunny,"}, {"content": " 21 C."},
         {"annotations": [CITATION]}],
    ),
    "refusal": (
        {"role": "assistant", "content": None, "refusal": "I can't help with that.", "annotations": []},
        "stop",
        [{"role": "assistant", "content": None, "refusal": ""}, {"refusal": "I can't"},
         {"refusal": " help with that."}],
    ),
}
USAGE = {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}


def scripted_openai() -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        text = body["messages"][-1]["content"]
        message, finish, deltas = SCRIPTS[text.split(":")[0]]
        head = {"id": "chatcmpl-" + text.replace(" ", "-"), "created": 1_700_000_000, "model": "gpt-4o-mini",
                "system_fingerprint": "fp_1"}
        if not body.get("stream"):
            return web.json_response({**head, "object": "chat.completion", "usage": USAGE, "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}]})
        head["object"] = "chat.completion.chunk"
        chunks = [{**head, "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": None}]}
                  for d in deltas]
        chunks.append({**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**head, "choices": [], "usage": USAGE})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for c in chunks:
            await resp.write(b"data: " + orjson.dumps(c) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    upstream = start_aiohttp_app(scripted_openai(), "scripted-openai")
    db = tmp_path_factory.mktemp("cache-fidelity") / "gw.db"
    config = {"cache": {"mode": "exact"}, "database_url": f"sqlite:///{db}",
              "models": [{"name": "gpt", "provider": "openai", "model": "gpt-4o-mini",
                          "api_base": upstream.url + "/v1", "api_key": "sk-up"}]}
    try:
        with running_gateway(config) as gw:
            yield gw
    finally:
        upstream.stop()


FUNCTIONS = [{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
NO_CACHE = {"x-aigw-cache": "no-cache"}  # straight to the upstream: what a live answer looks like


def chat(gw: RunningGateway) -> Any:
    return openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0).chat.completions


def settle(gw: RunningGateway) -> None:
    gw.call(gw.app.state["pipeline"].stage("cache").flush())


def request(text: str) -> JSON:
    kw: JSON = {"model": "gpt", "messages": [{"role": "user", "content": text}]}
    if text.startswith("function"):
        kw["functions"] = FUNCTIONS
    return kw


def _shown(choice: JSON) -> JSON:
    """A choice as a client reads it; an empty list is as good as absent (a stream never sends one)."""
    message = {k: v for k, v in choice["message"].items() if v != []}
    return {**choice, "message": message}


def plain(gw: RunningGateway, text: str, headers: dict[str, str] | None = None) -> tuple[str | None, JSON]:
    raw = chat(gw).with_raw_response.create(**request(text), extra_headers=headers)
    settle(gw)
    return raw.headers.get("x-aigw-cache"), _shown(raw.parse().choices[0].model_dump(exclude_unset=True))


def streamed(gw: RunningGateway, text: str, headers: dict[str, str] | None = None) -> tuple[str | None, JSON]:
    """The header and the answer the SDK's own stream accumulator makes of the chunks."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    with chat(gw).with_streaming_response.create(**request(text), stream=True, extra_headers=headers) as r:
        header = r.headers.get("x-aigw-cache")
        for chunk in r.parse():
            state.handle_chunk(chunk)
    final = state.get_final_completion().choices[0]
    settle(gw)
    message = final.message.model_dump(include={"role", "content", "refusal", "function_call", "annotations"},
                                       exclude_unset=True)
    return header, _shown({"finish_reason": final.finish_reason, "message": message})


@pytest.mark.parametrize("kind", ["function", "search", "refusal"])
def test_a_hit_carries_what_a_live_answer_of_its_kind_carries(gw: RunningGateway, kind: str) -> None:
    live_plain = plain(gw, f"{kind}: live plain", NO_CACHE)[1]
    live_stream = streamed(gw, f"{kind}: live stream", NO_CACHE)[1]
    assert plain(gw, f"{kind}: plain first")[0] == "miss"
    assert streamed(gw, f"{kind}: plain first") == ("hit", live_stream)
    assert streamed(gw, f"{kind}: stream first")[0] == "miss"
    assert plain(gw, f"{kind}: stream first") == ("hit", live_plain)


def test_a_legacy_function_call_is_replayed_as_openai_streams_it(gw: RunningGateway) -> None:
    plain(gw, "function: raw chunks")
    with chat(gw).with_streaming_response.create(**request("function: raw chunks"), stream=True) as r:
        assert r.headers["x-aigw-cache"] == "hit"
        chunks = [c for c in r.parse() if c.choices]
    calls = [c.choices[0].delta.function_call for c in chunks if c.choices[0].delta.function_call]
    assert [(f.name, f.arguments) for f in calls] == [(FUNCTION["name"], FUNCTION["arguments"])]
    assert chunks[-1].choices[0].finish_reason == "function_call"
    assert all(c.choices[0].delta.content is None for c in chunks)
