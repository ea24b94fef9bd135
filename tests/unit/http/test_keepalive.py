"""What a client receives from a stream with keep-alives on: the ASGI messages, in order (a 50 ms period)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aigw.http.keepalive import KeepAlives

EVERY = 0.05
PING = b": keep-alive\n\n"
START = {"type": "http.response.start", "status": 200, "headers": []}


class Client:
    """The ASGI ``send`` side: what went out, and whether a write was under way when another began."""

    def __init__(self, block_on: bytes = b"", block_s: float = 0.0) -> None:
        self.sent: list[Any] = []
        self.overlapped = False
        self._writing = False
        self.block_on, self.block_s = block_on, block_s

    async def send(self, message: dict[str, Any]) -> None:
        self.overlapped |= self._writing
        self._writing = True
        try:
            if message.get("body") == self.block_on and self.block_s:  # a slow reader: back-pressure
                await asyncio.sleep(self.block_s)
            self.sent.append("start" if message["type"] == "http.response.start" else message["body"])
        finally:
            self._writing = False


async def frames(*pauses: float) -> AsyncIterator[bytes]:
    for i, pause in enumerate(pauses):
        await asyncio.sleep(pause)
        yield b"data: %d\n\n" % i


async def test_a_stream_that_keeps_talking_gets_no_keepalive() -> None:
    client = Client()
    ka = KeepAlives(EVERY).watch(client.send, PING, lambda: START)
    await ka.pump(frames(*[0.01] * 12), START)  # 0.12 s in all, no gap of 0.05 s
    ka.close()
    assert client.sent == ["start", *(b"data: %d\n\n" % i for i in range(12))]


async def test_a_silent_wait_sends_the_head_once_then_keepalives_until_the_answer() -> None:
    client = Client()
    ka = KeepAlives(EVERY).watch(client.send, PING, lambda: START)
    await asyncio.sleep(EVERY * 3.5)  # the answer is late: the head goes out with the first keep-alive
    assert client.sent[0] == "start" and set(client.sent[1:]) == {PING} and len(client.sent) >= 3
    await ka.pump(frames(0, EVERY * 2.5, 0), START)  # its head is not sent again; the pause is filled
    ka.close()
    got = client.sent
    assert got.count("start") == 1
    first = got.index(b"data: 0\n\n")
    assert got[first + 1] == PING and got[-2:] == [b"data: 1\n\n", b"data: 2\n\n"]


async def test_settle_says_whether_the_head_went_out() -> None:
    quick = Client()
    ka = KeepAlives(EVERY).watch(quick.send, PING, lambda: START)
    assert await ka.settle() is False and quick.sent == []  # the caller still sends a status of its own
    slow = Client()
    ka = KeepAlives(EVERY).watch(slow.send, PING, lambda: START)
    await asyncio.sleep(EVERY * 1.5)
    assert await ka.settle() is True and slow.sent == ["start", PING]  # only an error event may follow
    await asyncio.sleep(EVERY * 2)
    assert slow.sent == ["start", PING]  # settled: the timer is off


async def test_no_keepalive_is_written_into_a_frame_a_slow_reader_holds_up() -> None:
    client = Client(block_on=b"data: 0\n\n", block_s=EVERY * 4)
    ka = KeepAlives(EVERY).watch(client.send, PING, lambda: START)
    await ka.pump(frames(0, EVERY * 0.5), START)
    ka.close()
    assert not client.overlapped and client.sent == ["start", b"data: 0\n\n", b"data: 1\n\n"]


async def test_close_stops_it_for_good() -> None:
    client = Client()
    ka = KeepAlives(EVERY).watch(client.send, PING, lambda: START)
    ka.close()
    await asyncio.sleep(EVERY * 2.5)
    assert client.sent == []
