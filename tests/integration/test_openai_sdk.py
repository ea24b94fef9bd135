"""The official openai SDK, sync and async, against a gateway on the embedded defaults."""

from __future__ import annotations

import base64
import json
import struct

import openai
import pytest

from tests.support.gateway import RunningGateway

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a gateway?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def client(gateway: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key="anything", max_retries=0)


@pytest.fixture
def aclient(gateway: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.v1, api_key="anything", max_retries=0)


def test_chat_completion_answers_with_usage_and_serving_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="mock", messages=MESSAGES)  # type: ignore[arg-type]
    resp = raw.parse()
    assert resp.choices[0].message.content.startswith("Mock answer to: What is a gateway?")
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert raw.headers["x-aigw-provider"] == "mock"
    assert raw.headers["x-aigw-model"] == "mock"
    assert raw.headers["x-request-id"]


def test_client_request_id_is_echoed(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="mock", messages=MESSAGES, extra_headers={"x-request-id": "my-trace-42"}  # type: ignore[arg-type]
    )
    assert raw.headers["x-request-id"] == "my-trace-42"


def test_same_request_same_answer(client: openai.OpenAI) -> None:
    a = client.chat.completions.create(model="mock", messages=MESSAGES)  # type: ignore[arg-type]
    b = client.chat.completions.create(model="mock", messages=MESSAGES)  # type: ignore[arg-type]
    assert a.choices[0].message.content == b.choices[0].message.content


def test_stream_yields_text_and_usage_only_when_asked(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="mock", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Mock answer to: What is a gateway?")
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"

    stream = client.chat.completions.create(
        model="mock", messages=MESSAGES, stream=True, stream_options={"include_usage": True}  # type: ignore[arg-type]
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_async_chat_and_stream(aclient: openai.AsyncOpenAI) -> None:
    resp = await aclient.chat.completions.create(model="mock-large", messages=MESSAGES)  # type: ignore[arg-type]
    assert resp.choices[0].message.content
    stream = await aclient.chat.completions.create(model="mock", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == resp.choices[0].message.content or text.startswith("Mock answer to:")


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    messages: list[dict[str, object]] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="mock", messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type,list-item]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "mock"}
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'})
    second = client.chat.completions.create(model="mock", messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type,list-item]
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content


def test_streamed_parallel_tool_calls_reassemble(client: openai.OpenAI) -> None:
    other = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
    stream = client.chat.completions.create(
        model="mock", messages=[{"role": "user", "content": "weather and time"}],
        tools=[WEATHER_TOOL, other], stream=True,  # type: ignore[list-item]
    )
    calls: dict[int, dict[str, str]] = {}
    for chunk in stream:
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(tc.index, {"name": "", "args": ""})
            entry["name"] += tc.function.name or "" if tc.function else ""
            entry["args"] += tc.function.arguments or "" if tc.function else ""
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["args"]) == {"city": "mock"} and json.loads(calls[1]["args"]) == {}


def test_json_mode_and_sampling_fields_are_accepted(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="mock", messages=MESSAGES, response_format={"type": "json_object"}, temperature=0.2,  # type: ignore[arg-type]
        top_p=0.9, max_completion_tokens=50, stop=["\n"], n=2, seed=7, user="u1", metadata={"team": "a"},
    )
    assert len(resp.choices) == 2


def test_image_content_parts_are_accepted(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="mock", messages=[{"role": "user", "content": [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]}])  # type: ignore[list-item]
    assert resp.choices[0].message.content.startswith("Mock answer to: describe")


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    floats = client.embeddings.create(model="mock-embed", input=["a", "b"], encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1] and len(floats.data[0].embedding) == 16
    raw = client.embeddings.with_raw_response.create(model="mock-embed", input="a", encoding_format="base64")
    b64 = json.loads(raw.http_response.text)["data"][0]["embedding"]
    decoded = struct.unpack("<16f", base64.b64decode(b64))
    assert decoded == pytest.approx(floats.data[0].embedding, rel=1e-6)


def test_legacy_completions_served_by_chat_translation(client: openai.OpenAI) -> None:
    resp = client.completions.create(model="mock", prompt="Say hi", max_tokens=20)
    assert resp.object == "text_completion" and resp.choices[0].text.startswith("Mock answer to: Say hi")
    text = "".join(c.choices[0].text for c in client.completions.create(model="mock", prompt="Say hi", stream=True)
                   if c.choices)
    assert text.startswith("Mock answer to: Say hi")


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert {"mock", "mock-large", "mock-embed"} <= set(ids)
    assert client.models.retrieve("mock").id == "mock"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_unknown_model_is_a_404_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-nope", messages=MESSAGES)  # type: ignore[arg-type]
    assert exc.value.code == "model_not_found"


def test_wrong_types_name_the_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="mock", messages=[{"role": "user", "content": 5}])  # type: ignore[list-item]
    assert exc.value.param is not None and exc.value.param.startswith("messages[0].content")
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="mock", messages=MESSAGES, temperature=9)  # type: ignore[arg-type]
    assert exc.value.param == "temperature"


def test_embeddings_model_cannot_chat(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="mock-embed", messages=MESSAGES)  # type: ignore[arg-type]


def test_the_mock_calls_a_custom_tool_plain_and_streamed(client: openai.OpenAI) -> None:
    shell = {"type": "custom", "custom": {"name": "shell", "format": {"type": "text"}}}
    ask = [{"role": "user", "content": "list the files"}]
    resp = client.chat.completions.create(model="mock", messages=ask, tools=[WEATHER_TOOL, shell],
                                          tool_choice={"type": "custom", "custom": {"name": "shell"}})  # type: ignore[arg-type]
    calls = resp.choices[0].message.tool_calls or []
    assert len(calls) == 1 and calls[0].type == "custom"
    assert (calls[0].custom.name, calls[0].custom.input) == ("shell", "list the files")
    chunks = list(client.chat.completions.create(model="mock", messages=ask, tools=[shell], stream=True))  # type: ignore[arg-type]
    deltas = [tc.model_dump(exclude_none=True)
              for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert deltas[0]["type"] == "custom" and deltas[0]["custom"]["name"] == "shell"
    assert "".join(d["custom"]["input"] for d in deltas) == "list the files"
