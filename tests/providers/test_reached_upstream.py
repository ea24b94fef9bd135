"""Which upstream failures say the upstream took the call (``reached_upstream``: the gateway bills its prompt)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from aigw import errors
from aigw.config.models import Deployment
from aigw.providers.http import HttpClients
from aigw.providers.openai.client import build
from tests.providers.openai_family import call, chat_body


@pytest.fixture
async def closing_port() -> AsyncIterator[int]:
    """An upstream that closes each connection as it accepts it, reading nothing (an idle keep-alive close
    racing the request, a proxy shedding load): the request never reached an application."""
    conns: list[socket.socket] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.shutdown(socket.SHUT_WR)  # FIN at once; nothing read
        conns.append(writer)  # type: ignore[arg-type]

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    for w in conns:
        w.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_connection_closed_before_the_upstream_read_the_request_is_not_marked_reached(
        closing_port: int, clients: HttpClients, stream: bool) -> None:
    deployment = Deployment(name="x", provider="openai", model="gpt-4o-mini",
                            api_base=f"http://127.0.0.1:{closing_port}/v1", api_key="k")
    provider = build(deployment, clients)
    with pytest.raises(errors.GatewayError) as failed:
        if stream:
            async for _ in provider.stream_chat(chat_body(), call()):
                pass
        else:
            await provider.chat(chat_body(), call())
    assert not failed.value.reached_upstream  # no status, not a byte: nothing says the upstream took it
