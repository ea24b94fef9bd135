"""An upstream that answers a stream request 200 with a plain JSON answer (it ignored ``stream``): it took the
call and generated (and billed) an answer, so the error the gateway raises is marked ``reached_upstream`` and
the prompt is billed, as for any stream that breaks after its 200 (docs/tenancy.md); an error object in that
200 body stays an error the upstream refused, billed nothing."""

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
ERROR: dict[str, Any] = {
    "openai": {"error": {"message": "overloaded", "type": "server_error"}},
    "anthropic": {"type": "error", "error": {"type": "overloaded_error", "message": "overloaded"}},
}


@pytest.fixture
async def plain_upstream(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    """A loopback upstream answering every POST 200 with ``request.param`` as JSON; its port."""
    body: dict[str, Any] = request.param

    async def answer(_: web.Request) -> web.Response:
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


async def _stream_error(kind: str, port: int, clients: HttpClients) -> errors.GatewayError:
    build = build_openai if kind == "openai" else build_anthropic
    api_base = f"http://127.0.0.1:{port}" + ("/v1" if kind == "openai" else "")
    provider = build(Deployment(name="x", provider=kind, model="m", api_base=api_base, api_key="k"), clients)
    with pytest.raises(errors.GatewayError) as failed:
        async for _ in provider.stream_chat(chat_body(), call()):
            pass
    return failed.value


@pytest.mark.parametrize(("kind", "plain_upstream"), [("openai", ANSWER["openai"]),
                                                      ("anthropic", ANSWER["anthropic"])],
                         indirect=["plain_upstream"])
async def test_a_plain_200_answer_to_a_stream_request_is_marked_reached(
        kind: str, plain_upstream: int, clients: HttpClients) -> None:
    assert (await _stream_error(kind, plain_upstream, clients)).reached_upstream


@pytest.mark.parametrize(("kind", "plain_upstream"), [("openai", ERROR["openai"]), ("anthropic", ERROR["anthropic"])],
                         indirect=["plain_upstream"])
async def test_an_error_object_in_a_200_body_to_a_stream_request_is_not_marked_reached(
        kind: str, plain_upstream: int, clients: HttpClients) -> None:
    assert not (await _stream_error(kind, plain_upstream, clients)).reached_upstream
