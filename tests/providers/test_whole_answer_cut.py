"""A stream request the upstream answered 200 with a whole JSON answer (it ignored ``stream``) whose body broke off
before its end: the status came, so the upstream took the call and the error is marked ``reached_upstream`` (its
prompt billed, docs/tenancy.md: "any break after the status came bills the prompt"), in both adapters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aigw import errors
from aigw.config.models import Deployment
from aigw.providers.anthropic.client import build as build_anthropic
from aigw.providers.http import HttpClients
from aigw.providers.openai.client import build as build_openai
from tests.providers.openai_family import call, chat_body


@pytest.fixture
async def cut_json_upstream() -> AsyncIterator[int]:
    """A loopback upstream answering 200 application/json, promising 4096 bytes and closing after a few."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n"
                     b'{"id": "c1", "choices": [')
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


def _provider(kind: str, port: int, clients: HttpClients) -> Any:
    build = build_openai if kind == "openai" else build_anthropic
    api_base = f"http://127.0.0.1:{port}" + ("/v1" if kind == "openai" else "")
    return build(Deployment(name="x", provider=kind, model="m", api_base=api_base, api_key="k"), clients)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_whole_json_answer_cut_after_its_200_was_taken(kind: str, cut_json_upstream: int,
                                                               clients: HttpClients) -> None:
    options = call()
    with pytest.raises(errors.GatewayError) as failed:
        async for _ in _provider(kind, cut_json_upstream, clients).stream_chat(chat_body(), options):
            pass
    assert options.sent
    assert failed.value.reached_upstream, failed.value
