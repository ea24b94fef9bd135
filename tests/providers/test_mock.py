"""The mock provider answers as OpenAI's API would, for the request fields it claims to honour."""

from __future__ import annotations

import datetime
import json
import uuid

import pytest
from pydantic import BaseModel, Field

from aigw import errors
from aigw.config.models import Deployment
from aigw.providers.base import CallOptions
from aigw.providers.mock import MAX_DIMENSIONS, MAX_INPUTS, MockProvider
from aigw.types import JSON

ASK = [{"role": "user", "content": "What is a gateway?"}]


def _mock() -> MockProvider:
    return MockProvider(Deployment(name="mock", provider="mock", model="mock"))


async def _chat(**extra: object) -> JSON:
    return await _mock().chat({"model": "mock", "messages": ASK, **extra}, CallOptions())


async def _streamed_text(**extra: object) -> tuple[str, str | None]:
    text, finish = "", None
    async for chunk in _mock().stream_chat({"model": "mock", "messages": ASK, "stream": True, **extra}, CallOptions()):
        for choice in chunk["choices"]:
            text += choice["delta"].get("content") or ""
            finish = choice["finish_reason"] or finish
    return text, finish


@pytest.mark.parametrize("value", [[1, 2, 3], "a gateway", [[1, 2, 3]]])
async def test_one_input_is_one_embedding(value: object) -> None:
    # OpenAI reads a flat list of token ids as one input: the mock answered one embedding per token
    answer = await _mock().embeddings({"model": "mock", "input": value}, CallOptions())
    assert [d["index"] for d in answer["data"]] == [0]


async def test_each_input_of_a_list_is_one_embedding() -> None:
    answer = await _mock().embeddings({"model": "mock", "input": [[1, 2], [3]]}, CallOptions())
    assert [d["index"] for d in answer["data"]] == [0, 1]
    assert answer["data"][0]["embedding"] != answer["data"][1]["embedding"]


async def test_token_ids_are_counted_one_token_each() -> None:
    # they were counted as the characters of their JSON ("[1,2,3]": 2 tokens), so billed at a guess
    answer = await _mock().embeddings({"model": "mock", "input": [[1, 2, 3], [4, 5, 6, 7, 8]]}, CallOptions())
    assert answer["usage"] == {"prompt_tokens": 8, "total_tokens": 8}


async def test_more_dimensions_than_any_embedding_model_makes_is_a_bad_request() -> None:
    # 10**9 dimensions made a vector of 10**9 floats on the event loop: one request could take the gateway down
    with pytest.raises(errors.InvalidRequest) as err:
        await _mock().embeddings({"model": "mock", "input": "a", "dimensions": MAX_DIMENSIONS + 1}, CallOptions())
    assert err.value.param == "dimensions" and err.value.status == 400
    answer = await _mock().embeddings({"model": "mock", "input": "a", "dimensions": MAX_DIMENSIONS}, CallOptions())
    assert len(answer["data"][0]["embedding"]) == MAX_DIMENSIONS


async def test_more_inputs_than_openai_takes_in_one_request_is_a_bad_request() -> None:
    # 100,000 one-letter inputs (a 400 KB body) at 3072 dimensions was ~300 million floats on the event loop
    with pytest.raises(errors.InvalidRequest) as err:
        await _mock().embeddings({"model": "mock", "input": ["a"] * (MAX_INPUTS + 1)}, CallOptions())
    assert err.value.param == "input" and err.value.status == 400
    answer = await _mock().embeddings({"model": "mock", "input": [[1]] * MAX_INPUTS}, CallOptions())
    assert len(answer["data"]) == MAX_INPUTS


@pytest.mark.parametrize("schema", [
    {"type": "string", "minLength": 10**9},
    {"type": "array", "minItems": 16, "items": {"type": "array", "minItems": 16, "items": {"type": "array",
     "minItems": 16, "items": {"type": "array", "minItems": 16, "items": {"type": "array", "minItems": 16,
     "items": {"type": "array", "minItems": 16, "items": {"type": "string"}}}}}}},
], ids=["long-string", "nested-arrays"])
async def test_a_json_schema_answer_stays_small_whatever_the_schema_asks(schema: JSON) -> None:
    # a 1e9 minLength was a 1 GB string; arrays of 16 nested six deep were 16**6 = 16.7 million items (eight deep,
    # 4 billion), built and serialised on the event loop: one request could stall or take down the gateway
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    answer = await _chat(response_format=fmt)
    assert len(answer["choices"][0]["message"]["content"]) < 100_000


@pytest.mark.parametrize("parameters", [None, {}, {"type": "object"}])
async def test_a_function_without_parameters_is_called_with_an_empty_object(parameters: object) -> None:
    # the arguments were '"mock"': a client's json.loads gave a string, not the object every call carries
    function: JSON = {"name": "now"} if parameters is None else {"name": "now", "parameters": parameters}
    answer = await _chat(tools=[{"type": "function", "function": function}])
    call = answer["choices"][0]["message"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {}


@pytest.mark.parametrize("stop", ["gateway", ["nothing-like-it", "gateway"]])
async def test_the_answer_ends_before_a_stop_sequence(stop: object) -> None:
    # the mock ignored ``stop``: the answer went on past the string the client said to stop at
    full = (await _chat())["choices"][0]["message"]["content"]
    choice = (await _chat(stop=stop))["choices"][0]
    assert choice["message"]["content"] == full[: full.index("gateway")]
    assert choice["finish_reason"] == "stop"
    assert await _streamed_text(stop=stop) == (choice["message"]["content"], "stop")


async def test_a_stop_sequence_not_in_the_answer_changes_nothing() -> None:
    plain, stopped = (await _chat())["choices"][0], (await _chat(stop=["zzz"], max_tokens=4))["choices"][0]
    assert stopped["message"]["content"] == plain["message"]["content"][:16] and stopped["finish_reason"] == "length"


WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "clock"}}
SHELL = {"type": "custom", "custom": {"name": "shell"}}


def _called(answer: JSON) -> list[str]:
    calls = answer["choices"][0]["message"].get("tool_calls") or []
    return [c[c["type"]]["name"] for c in calls]


@pytest.mark.parametrize(("mode", "allowed", "called"), [
    ("auto", [{"type": "function", "function": {"name": "clock"}}], ["clock"]),
    ("required", [{"type": "custom", "custom": {"name": "shell"}}, {"type": "function", "function": {"name": "clock"}}],
     ["clock", "shell"]),
])
async def test_allowed_tools_limit_the_tools_called(mode: str, allowed: list[JSON], called: list[str]) -> None:
    # the mock called the first tools offered, whichever tool_choice.allowed_tools allowed
    choice = {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": allowed}}
    assert _called(await _chat(tools=[WEATHER, CLOCK, SHELL], tool_choice=choice)) == called


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "clock"}},
                                    {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
                                        {"type": "function", "function": {"name": "clock"}}]}}])
async def test_a_forced_tool_is_called_after_a_tool_result_too(choice: object) -> None:
    # "required" (or a named tool) makes a model call one whatever the last turn was: the mock answered text
    messages = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "clock", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "12:00"}]
    answer = await _mock().chat({"model": "mock", "messages": messages, "tools": [WEATHER, CLOCK],
                                 "tool_choice": choice}, CallOptions())
    assert answer["choices"][0]["finish_reason"] == "tool_calls" and _called(answer)
    auto = await _mock().chat({"model": "mock", "messages": messages, "tools": [WEATHER, CLOCK]}, CallOptions())
    assert auto["choices"][0]["finish_reason"] == "stop"  # left to choose, it answers the tool's result


@pytest.mark.parametrize("top", [0, 5, 20])
async def test_each_token_has_as_many_alternatives_as_asked(top: int) -> None:
    # past 13 (its own token and twelve words) the mock gave fewer than the top_logprobs asked for
    content = (await _chat(logprobs=True, top_logprobs=top))["choices"][0]["logprobs"]["content"]
    for token in content:
        alts = [t["token"] for t in token["top_logprobs"]]
        assert len(alts) == len(set(alts)) == top and (top == 0 or alts[0] == token["token"])
        assert [t["logprob"] for t in token["top_logprobs"]] == sorted((t["logprob"] for t in token["top_logprobs"]),
                                                                      reverse=True)


class Meeting(BaseModel):
    when: datetime.datetime
    day: datetime.date
    id: uuid.UUID
    organiser: str = Field(min_length=8)
    initials: str = Field(max_length=2)
    seats: int = Field(ge=10, le=20)
    share: float = Field(gt=0.5, lt=1)
    tags: list[str] = Field(min_length=2)


async def test_a_json_schema_answer_is_a_valid_instance_of_the_schema() -> None:
    # formats, ranges and lengths were ignored: "mock" for a date-time, 1 for seats >= 10, so the SDK's .parse()
    # raised on the mock's answer
    schema = Meeting.model_json_schema()
    answer = await _chat(response_format={"type": "json_schema", "json_schema": {"name": "m", "schema": schema}})
    Meeting.model_validate_json(answer["choices"][0]["message"]["content"])
