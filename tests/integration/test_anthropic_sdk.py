"""The official anthropic SDK against /v1/messages, served by a non-Anthropic provider (mock)."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from aigw.accounting.tokens import TokenCounter
from tests.support.gateway import RunningGateway
from tests.support.media import b64, png

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def client(gateway: RunningGateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="anything", max_retries=0)


def test_message_with_system_prompt(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(
        model="mock", max_tokens=200, system="Be brief.", messages=[{"role": "user", "content": "Hello Claude"}]
    )
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "mock"
    assert msg.content[0].type == "text" and msg.content[0].text.startswith("Mock answer to: Hello Claude")
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert raw.headers["x-aigw-provider"] == "mock"


def test_stream_has_anthropics_event_order(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="mock", max_tokens=200,
                                messages=[{"role": "user", "content": "Hello stream"}]) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start"
    assert events[-1] == "message_stop" and events[-2] == "message_delta"
    assert "content_block_start" in events and "content_block_stop" in events
    assert final.content[0].text.startswith("Mock answer to: Hello stream")  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


def test_tool_use_round_trip(client: anthropic.Anthropic) -> None:
    first = client.messages.create(model="mock", max_tokens=200, tools=[WEATHER],  # type: ignore[list-item]
                                   messages=[{"role": "user", "content": "Weather in Oslo?"}])
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "mock"}
    second = client.messages.create(
        model="mock", max_tokens=200, tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},  # type: ignore[misc]
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "4 C, rain"}]},
        ],
    )
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"


def test_streamed_tool_use_arrives_as_input_json_delta(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="mock", max_tokens=200, tools=[WEATHER],  # type: ignore[list-item]
                                messages=[{"role": "user", "content": "Weather?"}]) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert deltas and set(deltas) == {"input_json_delta"}
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.input == {"city": "mock"} and final.stop_reason == "tool_use"


async def test_async_client(gateway: RunningGateway) -> None:
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key="anything", max_retries=0)
    msg = await client.messages.create(model="mock-large", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text  # type: ignore[union-attr]
    async with client.messages.stream(model="mock", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join([t async for t in s.text_stream])
    assert text.startswith("Mock answer to: hi")


def test_errors_arrive_in_anthropic_shape(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as nf:
        client.messages.create(model="no-such", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="mock", max_tokens=10, messages=[{"role": "robot", "content": "x"}])  # type: ignore[typeddict-item]
    assert bad.value.body["type"] == "error"  # type: ignore[index]


def test_count_tokens_is_free_and_local(client: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "The quarterly report shows that revenue grew in every region. " * 8}]
    counted = client.messages.count_tokens(model="mock", messages=messages)  # type: ignore[arg-type]
    assert counted.input_tokens == TokenCounter().count_messages(messages)  # the shipped tokenizer, not len/4
    tool = {"name": "get_weather", "description": "The weather in a city, now.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    with_tools = client.messages.count_tokens(model="mock", messages=messages, tools=[tool])  # type: ignore[arg-type,list-item]
    assert with_tools.input_tokens > counted.input_tokens + 10  # tool definitions are input too
    with pytest.raises(anthropic.NotFoundError):  # as Anthropic answers for a model it does not serve
        client.messages.count_tokens(model="no-such", messages=[{"role": "user", "content": "hi"}])


def test_count_tokens_counts_images_and_documents(client: anthropic.Anthropic) -> None:
    text = {"type": "text", "text": "What does this chart show?"}
    bare = client.messages.count_tokens(model="mock", messages=[{"role": "user", "content": [text]}])
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(png(1024, 1024))}}
    seen = client.messages.count_tokens(model="mock", messages=[{"role": "user", "content": [image, text]}])  # type: ignore[list-item]
    assert seen.input_tokens - bare.input_tokens == 765  # 4 tiles of 512 px after scaling to 768x768, + 85
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                          "data": b64(b"%PDF-1.7" + b"x" * 120_000)}}
    read = client.messages.count_tokens(model="mock", messages=[{"role": "user", "content": [pdf, text]}])  # type: ignore[list-item]
    assert read.input_tokens - bare.input_tokens >= 2_000  # a document is not free either


def test_count_tokens_counts_the_thinking_of_a_tool_loop_in_progress(client: anthropic.Anthropic) -> None:
    """Anthropic strips the thinking of earlier turns, but the turn still running (its tool results sent back,
    no new user text) is in the context, thinking included: it was counted as nothing."""
    thought = "The user wants the weather, so I should call the tool for Paris and then summarise it. " * 6
    tools = [{"name": "weather", "input_schema": {"type": "object"}}]
    turn = {"role": "assistant", "content": [{"type": "thinking", "thinking": thought, "signature": "sig"},
                                             {"type": "tool_use", "id": "t1", "name": "weather", "input": {}}]}
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]}
    ask = {"role": "user", "content": "Weather in Paris?"}

    def count(*messages: object) -> int:
        return client.messages.count_tokens(model="mock", messages=list(messages), tools=tools,  # type: ignore[arg-type]
                                            thinking={"type": "enabled", "budget_tokens": 2000}).input_tokens

    bare = {**turn, "content": turn["content"][1:]}  # type: ignore[index]
    in_loop = count(ask, turn, result) - count(ask, bare, result)
    assert in_loop == TokenCounter().count_text(thought)
    later = {"role": "user", "content": "And tomorrow?"}  # a new turn: the earlier thinking is stripped
    assert count(ask, turn, result, {"role": "assistant", "content": "Sunny."}, later) == \
        count(ask, bare, result, {"role": "assistant", "content": "Sunny."}, later)


def test_count_tokens_answers_with_a_request_id(client: anthropic.Anthropic) -> None:
    counted = client.messages.count_tokens(model="mock", messages=[{"role": "user", "content": "hi"}])
    assert counted._request_id and counted._request_id.startswith("req_")  # the SDK reads `request-id`


def test_a_reply_cut_at_max_tokens_says_so(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model="mock", max_tokens=2, messages=[{"role": "user", "content": "Hello Claude"}])
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens <= 2
    with client.messages.stream(model="mock", max_tokens=2,
                                messages=[{"role": "user", "content": "Hello stream"}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens"
    whole = client.messages.create(model="mock", max_tokens=500, messages=[{"role": "user", "content": "Hello"}])
    assert whole.stop_reason == "end_turn"


def test_error_body_carries_request_id_like_anthropics(client: anthropic.Anthropic) -> None:
    """Anthropic's errors: ``{"type": "error", "error": {...}, "request_id": "req_..."}``, the id of the header."""
    with pytest.raises(anthropic.NotFoundError) as nf:
        client.messages.create(model="no-such", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    body = nf.value.body
    assert isinstance(body, dict) and body["request_id"].startswith("req_")
    assert body["request_id"] == nf.value.request_id == nf.value.response.headers["request-id"]


def test_a_tool_result_may_hold_documents(client: anthropic.Anthropic) -> None:
    """Anthropic takes text, image and document blocks in a tool_result: a text document is the tool's text,
    a PDF rides beside it (OpenAI-family tool messages take text only)."""
    use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": b64(b"%PDF-1.7")}}
    report = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "4 C, rain"}}
    for content in ([report], [report, pdf]):
        msg = client.messages.create(model="mock", max_tokens=50, tools=[WEATHER], messages=[  # type: ignore[list-item]
            {"role": "user", "content": "Weather in Oslo?"}, {"role": "assistant", "content": [use]},  # type: ignore[list-item]
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": content}]},  # type: ignore[typeddict-item]
        ])
        assert msg.type == "message" and msg.content  # was a 400 "Input should be 'text' or 'image'"
        if content == [report]:
            assert msg.stop_reason == "end_turn"  # the tool answered: the model answers


@pytest.mark.parametrize("empty", [[], ""], ids=["list", "string"])
def test_empty_content_is_anthropics_400(client: anthropic.Anthropic, empty: Any) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="mock", max_tokens=10, messages=[{"role": "user", "content": empty}])
    assert "messages.0: all messages must have non-empty content" in bad.value.body["error"]["message"]  # type: ignore[index]
    prefill = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": empty}]
    assert client.messages.create(model="mock", max_tokens=10, messages=prefill).type == "message"  # allowed last


def test_an_endpoint_the_gateway_lacks_answers_in_anthropics_shape(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as nf:
        client.messages.batches.list()
    body = nf.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert body["request_id"] == nf.value.request_id and "/v1/messages/batches" in body["error"]["message"]
