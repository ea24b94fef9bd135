"""An upstream that answers a stream request 200 with a plain JSON answer (it ignored ``stream``): the answer is
streamed on as the canonical chunks a live stream would have sent (role, text or tool calls, finish, usage), so
it is served and billed from its usage. An error object in that 200 body stays an error the upstream refused,
billed nothing; a body that is not JSON, or JSON that is neither an answer nor an error, is an error marked
``reached_upstream`` (the upstream took the call: its prompt is billed, docs/tenancy.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from aigw import errors
from aigw.config.models import Deployment
from aigw.providers.anthropic.client import build as build_anthropic
from aigw.providers.http import HttpClients
from aigw.providers.openai.client import build as build_openai
from tests.providers.openai_family import call, chat_body

ANSWER: dict[str, Any] = {
    "openai": {"id": "c1", "object": "chat.completion", "model": "gpt-4o-mini",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}},
    "anthropic": {"id": "m1", "type": "message", "role": "assistant", "model": "claude-x",
                  "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
                  "usage": {"input_tokens": 9, "output_tokens": 1}},
}
NOT_AN_ANSWER: dict[str, Any] = {
    "openai": {"id": "c1", "object": "chat.completion", "choices": []},
    "anthropic": {"id": "m1", "type": "message_batch"},
}
ERROR: dict[str, Any] = {
    "openai": {"error": {"message": "overloaded", "type": "server_error"}},
    "anthropic": {"type": "error", "error": {"type": "overloaded_error", "message": "overloaded"}},
}


@pytest.fixture
async def plain_upstream(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    """A loopback upstream answering every POST 200 with ``request.param`` as JSON; its port."""
    body: dict[str, Any] = request.param

    async def answer(_: web.Request) -> web.Response:
        if isinstance(body, str):
            return web.Response(text=body, content_type="application/json")
        return web.json_response(body)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    app.router.add_post("/v1/messages", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert runner.addresses
    yield int(runner.addresses[0][1])
    await runner.cleanup()


def _provider(kind: str, port: int, clients: HttpClients) -> Any:
    build = build_openai if kind == "openai" else build_anthropic
    api_base = f"http://127.0.0.1:{port}" + ("/v1" if kind == "openai" else "")
    return build(Deployment(name="x", provider=kind, model="m", api_base=api_base, api_key="k"), clients)


async def _stream_error(kind: str, port: int, clients: HttpClients) -> errors.GatewayError:
    with pytest.raises(errors.GatewayError) as failed:
        async for _ in _provider(kind, port, clients).stream_chat(chat_body(), call()):
            pass
    return failed.value


@pytest.mark.parametrize(("kind", "plain_upstream"), [("openai", ANSWER["openai"]),
                                                      ("anthropic", ANSWER["anthropic"])],
                         indirect=["plain_upstream"])
async def test_a_plain_200_answer_to_a_stream_request_is_streamed_on_with_its_usage(
        kind: str, plain_upstream: int, clients: HttpClients, caplog: pytest.LogCaptureFixture) -> None:
    provider = _provider(kind, plain_upstream, clients)
    with caplog.at_level("INFO", logger="aigw.providers"):
        for _ in range(2):
            chunks = [c async for c in provider.stream_chat(chat_body(), call())]
    said = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert said[0]["role"] == "assistant"
    assert "".join(d.get("content") or "" for d in said) == "hi"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == []
    assert (chunks[-1]["usage"]["prompt_tokens"], chunks[-1]["usage"]["completion_tokens"]) == (9, 1)
    assert len([r for r in caplog.records if "ignores stream=true" in r.getMessage()]) == 1  # once, not per call


@pytest.mark.parametrize(("kind", "plain_upstream"), [
    ("openai", "not json {"), ("anthropic", "not json {"),
    ("openai", NOT_AN_ANSWER["openai"]), ("anthropic", NOT_AN_ANSWER["anthropic"]),
], indirect=["plain_upstream"])
async def test_a_200_json_body_that_is_no_answer_is_an_error_marked_reached(
        kind: str, plain_upstream: int, clients: HttpClients) -> None:
    failed = await _stream_error(kind, plain_upstream, clients)
    assert failed.kind == "upstream_error" and failed.reached_upstream


@pytest.mark.parametrize(("kind", "plain_upstream"), [("openai", ERROR["openai"]), ("anthropic", ERROR["anthropic"])],
                         indirect=["plain_upstream"])
async def test_an_error_object_in_a_200_body_to_a_stream_request_is_not_marked_reached(
        kind: str, plain_upstream: int, clients: HttpClients) -> None:
    assert not (await _stream_error(kind, plain_upstream, clients)).reached_upstream
