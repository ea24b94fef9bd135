"""The official ``anthropic`` SDK reading bytes we produce, through an in-memory transport (no network)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import orjson

REQUEST = {"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


def sdk_client(status: int, body: bytes, content_type: str) -> anthropic.Anthropic:
    """An SDK client whose every request gets this one answer."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, headers={"content-type": content_type}, content=body)

    transport = httpx2.MockTransport(answer)
    return anthropic.Anthropic(
        api_key="k", base_url="http://gateway.test", http_client=httpx2.Client(transport=transport), max_retries=0
    )


def sdk_message(message: dict[str, Any]) -> Any:
    """What ``client.messages.create`` returns for a non-streaming answer of ours."""
    return sdk_client(200, orjson.dumps(message), "application/json").messages.create(**REQUEST)  # type: ignore[call-overload]


def sdk_stream(sse: bytes) -> tuple[list[Any], Any]:
    """(events, final message) the SDK's MessageStream builds from our SSE bytes."""
    client = sdk_client(200, sse, "text/event-stream")
    with client.messages.stream(**REQUEST) as stream:  # type: ignore[arg-type]
        events = list(stream)
        return events, stream.get_final_message()


def sdk_error(status: int, body: dict[str, Any]) -> anthropic.APIStatusError:
    """The exception the SDK raises for one of our error answers."""
    client = sdk_client(status, orjson.dumps(body), "application/json")
    try:
        client.messages.create(**REQUEST)  # type: ignore[call-overload]
    except anthropic.APIStatusError as exc:
        return exc
    raise AssertionError("the SDK accepted an error answer")
