"""``iter_sse`` against a real loopback server that sends the stream in awkward pieces: lines and UTF-8
characters split across reads, CRLF endings, comments, a last event with no blank line after it, a line of
megabytes, and one past the bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from aigw import errors
from aigw.providers import http as provider_http
from aigw.providers.http import SseEvent, iter_sse
from tests.support.servers import start_aiohttp_app


async def _events(pieces: list[bytes], first_event_timeout: float | None = None) -> list[SseEvent]:
    """The events ``iter_sse`` reads from a server that writes ``pieces`` one by one, pausing between them."""

    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
            await asyncio.sleep(0.01)  # each piece its own read on the client's side
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/", handle)
    server = start_aiohttp_app(app)
    try:
        async with aiohttp.ClientSession() as session, session.get(server.url + "/") as resp:
            events: AsyncIterator[SseEvent] = iter_sse(resp, first_event_timeout)
            return [e async for e in events]
    finally:
        server.stop()


async def test_lines_and_characters_split_across_reads_come_out_whole() -> None:
    euro = "€".encode()
    pieces = [b"data: {\"a\":", b" 1}\n", b"\n: keep-alive comment\n\nevent: ping\r\ndata: x", euro[:1],
              euro[1:] + b"y\r\n\r\n", b"data: one\ndata: two\n\n", b"data: [DONE]"]  # no blank line at the end
    got = await _events(pieces, first_event_timeout=5)
    assert got == [SseEvent(None, '{"a": 1}'), SseEvent("ping", "x€y"), SseEvent(None, "one\ntwo"),
                   SseEvent(None, "[DONE]")]


async def test_a_line_of_megabytes_is_one_event() -> None:
    big = b"z" * 3_000_000
    pieces = [b"data: " + big[:1_000_000], big[1_000_000:], b"\n\n", b"data: [DONE]\n\n"]
    got = await _events(pieces)
    assert [len(e.data) for e in got] == [3_000_000, 6]


async def test_a_line_past_the_bound_is_an_upstream_error_not_unbounded_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provider_http, "MAX_SSE_LINE_BYTES", 10_000)
    with pytest.raises(errors.UpstreamError, match="over 10000 bytes"):
        await _events([b"data: ok\n\n", b"data: " + b"z" * 6_000, b"z" * 6_000, b"\n\n"])
