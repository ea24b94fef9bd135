"""Keep-alives for a stream that has nothing to send: proxies cut a connection idle for 60 s.

A slow first token (long reasoning, a queue upstream) or a long pause between
chunks leaves the client's connection silent, and nginx or an AWS ALB in between
closes it (both default to 60 s). Once a stream has been silent for ``every``
seconds, its wire format's own harmless keep-alive goes out: an SSE comment for
the OpenAI API, Anthropic's documented ``ping`` event for the Messages API.

One timer serves all of a loop's streams (``KeepAlives``), ticking only while
there are some: a timer handle each cost ~7 µs under uvloop, a set entry costs
nothing to speak of. Per chunk: two attribute writes and a clock read. A task is
made only when a keep-alive is due. The first keep-alive of a request still
waiting for its answer sends the stream's head too (status 200 and the headers
known so far): from then on a failure reaches the client as an error event in
the stream (``Flow`` sends it), never as a status.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable
from time import monotonic
from typing import Any

from aigw.http.request import Send

log = logging.getLogger("aigw.http")

Start = Callable[[], dict[str, Any]]  # the stream's ``http.response.start`` message, made when it is needed


class KeepAlives:
    """The keep-alive clock of one event loop: a stream silent for ``every`` seconds gets a keep-alive within
    ``every`` + a quarter of it (at most + 1 s)."""

    __slots__ = ("every", "handle", "loop", "streams", "tick")

    def __init__(self, every: float) -> None:
        self.every = every
        self.tick = min(every / 4, 1.0)
        self.streams: set[KeepAlive] = set()
        self.handle: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def watch(self, send: Send, frame: bytes, start: Start) -> KeepAlive:
        """Keep-alives for one stream from now on, until its ``close`` (or ``settle``)."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # a new loop (a test's): what the old one watched ended with it
            self.loop, self.streams, self.handle = loop, set(), None
        stream = KeepAlive(self, loop, send, frame, start)
        self.streams.add(stream)
        if self.handle is None:
            self.handle = loop.call_later(self.tick, self._tick)
        return stream

    def _tick(self) -> None:
        silent_since = monotonic() - self.every
        for stream in self.streams:
            if stream.last <= silent_since and stream.writing is None:  # ``last`` is inf while a frame goes out
                stream.fire()
        self.handle = self.loop.call_later(self.tick, self._tick) if self.streams and self.loop else None


class KeepAlive:
    """One stream's keep-alives: ``frame`` on ``send`` whenever the stream was silent for the clock's period."""

    __slots__ = ("clock", "frame", "last", "loop", "send", "start", "started", "writing")

    def __init__(self, clock: KeepAlives, loop: asyncio.AbstractEventLoop, send: Send, frame: bytes,
                 start: Start) -> None:
        self.clock = clock
        self.loop = loop
        self.send = send
        self.frame = frame
        self.start: Start | None = start
        self.started = False  # the stream's head went out, or is on its way (``writing``)
        self.writing: asyncio.Task[None] | None = None  # a keep-alive being written
        self.last = monotonic()  # when the client last got bytes; inf while the stream writes a frame

    def fire(self) -> None:
        self.started = True
        self.writing = self.loop.create_task(self._write())

    async def _write(self) -> None:
        try:
            if self.start is not None:  # the answer is not ready yet: its head goes out with the first keep-alive
                start, self.start = self.start, None
                await self.send(start())
            await self.send({"type": "http.response.body", "body": self.frame, "more_body": True})
        except Exception:  # a client gone or a server stopping: the stream's own next write finds out
            log.debug("keep-alive not sent", exc_info=True)
        finally:
            self.last = monotonic()
            self.writing = None

    async def settle(self) -> bool:
        """No more keep-alives; the one being written (if any) finishes first. Whether the head went out."""
        self.clock.streams.discard(self)
        if self.writing is not None:
            await self.writing
        return self.started

    def close(self) -> None:
        """No more keep-alives, without waiting (a call cancelled or ended): none may follow the stream's end."""
        self.clock.streams.discard(self)
        if self.writing is not None:
            self.writing.cancel()

    async def pump(self, frames: AsyncIterator[bytes], start: dict[str, Any]) -> None:
        """Send the stream's head (unless a keep-alive sent it) and its frames, keep-alives in the pauses;
        no more keep-alives once the frames end."""
        send = self.send
        if not self.started:
            self.started = True
            self.last = math.inf
            await send(start)
            self.last = monotonic()
        async for frame in frames:
            if self.writing is not None:
                await self.writing
            self.last = math.inf  # no keep-alive while a frame goes out (a slow reader's back-pressure)
            await send({"type": "http.response.body", "body": frame, "more_body": True})
            self.last = monotonic()
        await self.settle()
