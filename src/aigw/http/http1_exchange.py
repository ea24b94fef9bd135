"""One request and its answer on an HTTP/1.1 connection: the ASGI ``receive`` and ``send`` of one app call.

``receive`` hands over the request body as it arrives (``Expect: 100-continue``
answered on the first read), then waits for the client to leave or the answer to
end. ``send`` frames the answer: the head is held back and leaves with a whole
body in one write, or, for a stream, with its first event; later events of one
loop turn share a write (the connection's ``queue_write``). The app may skip the
messages where nothing needs them (the scope's ``EXCHANGE``): ``body_now`` hands
over a body that came whole with its head, ``respond`` sends a whole answer, each
a plain call instead of coroutines and message dicts (~4 % of a cache hit's
instructions). Response headers are checked for CR/LF with one count over the
finished head (a search per header cost 20 µs a hit). The connection side is ``http1_connection``.
"""

from __future__ import annotations

import asyncio
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aigw.http.http1_connection import Connection

JOIN_BELOW = 64 * 1024  # a head and a body under this go out as one write; bigger bodies as two
_STATUS = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}


def status_line(status: int) -> bytes:
    return _STATUS.get(status) or b"HTTP/1.1 %d \r\n" % status


def date_line() -> bytes:
    return b"date: " + formatdate(usegmt=True).encode() + b"\r\n"


# The server's part of the ASGI scope (aigw's own server only; elsewhere they are never set):
CANCEL_ON_DISCONNECT = "aigw.cancel_on_disconnect"  # the app sets it: cancel my call if the client leaves
CLIENT_GONE = "aigw.client_gone"  # the server sets it before that cancel: why the call was stopped
EXCHANGE = "aigw.exchange"  # the server sets it: this Exchange, for its ``body_now`` and ``respond``


class Exchange:
    """One request and its response: the ASGI ``receive`` and ``send`` of one call of the app."""

    __slots__ = ("body_delivered", "body_done", "buffered", "chunked", "chunks", "complete", "conn",
                 "disconnected", "expect_continue", "first_sent", "head", "is_head", "keep_alive", "scope", "started",
                 "task", "waiter")

    def __init__(self, conn: Connection, scope: dict[str, Any], keep_alive: bool, expect_continue: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.is_head = scope["method"] == "HEAD"
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.body_done = False
        self.body_delivered = False
        self.disconnected = False
        self.started = False
        self.complete = False
        self.chunked = False
        self.first_sent = False
        self.head: bytes | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None  # the app's call answering it

    def cancel_if_asked(self) -> None:
        """The client left before its answer was complete: cancel the app's call if the app asked for it (a model
        call, whose upstream work and limits would otherwise run on for nobody). Other calls (an admin change
        half made) are left to finish: cancelling is opt-in, as in aiohttp."""
        task = self.task
        if task is not None and not task.done() and not self.complete and self.scope.get(CANCEL_ON_DISCONNECT):
            self.scope[CLIENT_GONE] = True
            task.cancel()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self.waiter = self.conn.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def body_now(self) -> bytes | None:
        """The whole body when all of it has arrived and none was read yet (a body that came with its head):
        what ``receive`` would hand over, without a coroutine or a message. None: read it with ``receive``."""
        if not self.body_done or self.body_delivered or self.expect_continue or self.disconnected or self.complete:
            return None
        self.body_delivered = True
        return self._take()

    def _take(self) -> bytes:
        """The body buffered so far, handed over; reading goes on if its size had paused it (even when the body
        is whole: only a read hears the client leave, and an app waiting on a long prompt's answer must)."""
        chunks = self.chunks
        self.chunks = []
        self.buffered = 0
        if self.conn.read_paused:
            self.conn.resume_reading()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def respond(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]], content_type: bytes) -> None:
        """A whole answer in one call: what ``send`` does with a start message (``content_type``, the body's
        length, ``headers``) and a last body message. The usual case (a kept-alive 1.1 connection, no
        ``connection`` header of the app's) has its head made with one step a header (``_start`` compares each
        name twice: ~25 % slower); anything else goes the general way."""
        if self.started:
            raise RuntimeError("http.response.start sent twice")
        if (self.keep_alive and self.body_done and not self.conn.state.stopping
                and self.scope["http_version"] != "1.0"):
            head = [status_line(status), self.conn.state.date, b"content-type: ", content_type,
                    b"\r\ncontent-length: ", b"%d" % len(body), b"\r\n"]
            for name, value in headers:
                if name == b"connection":  # the app's own: the general way, which reads it
                    break
                head += (name, b": ", value, b"\r\n")
            else:
                head.append(b"\r\n")
                joined = b"".join(head)
                n = 5 + len(headers)  # the status line, the date, type, length, the blank line, one a header
                if joined.count(b"\n") != n or joined.count(b"\r") != n:
                    raise RuntimeError("a response header name or value contains CR or LF")
                self.head = joined
        if self.head is None:
            self._start(status, [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *headers])
        self.started = True
        self._write_body(body, False)

    async def receive(self) -> dict[str, Any]:
        conn = self.conn
        if self.expect_continue:
            self.expect_continue = False
            if not self.started and not conn.closed:
                conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                if conn.parsing is self:
                    conn.body_since = conn.state.now  # the client's body clock starts now
        if self.disconnected or self.complete:
            return {"type": "http.disconnect"}
        if self.body_delivered:  # nothing more to read: the next event is the client leaving (or the end)
            await self._wait()
            return {"type": "http.disconnect"}
        while not self.chunks and not self.body_done:
            conn.resume_reading()
            await self._wait()
            if self.disconnected:
                return {"type": "http.disconnect"}
        body = self._take()
        if self.body_done:
            self.body_delivered = True
        return {"type": "http.request", "body": body, "more_body": not self.body_done}

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if not self.started or self.complete:
                raise RuntimeError("http.response.body sent before http.response.start or after the last body")
            more = message.get("more_body", False)
            self._write_body(message.get("body", b""), more)
            if more and self.conn.write_paused:
                await self.conn.drain()
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self._start(message["status"], message.get("headers", ()))
            self.started = True
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    def _write_body(self, body: bytes, more: bool) -> None:
        """A part of the answer's body (the last unless ``more``), with the head when it is still held back."""
        if self.is_head:
            body = b""
        if self.chunked:
            data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more:
                data += b"0\r\n\r\n"
        else:
            data = body
        conn = self.conn
        head = self.head
        if not more:
            self.complete = True
        if conn.closed:
            pass  # the client left; the app learns it from receive()
        elif head is not None:
            self.head = None
            if len(data) < JOIN_BELOW:
                conn.transport.write(head + data)
            else:
                conn.transport.write(head)
                conn.transport.write(data)
        elif data or conn.out:  # a streamed part: it leaves with the others sent in this loop turn,
            if data:  # except the first (with the head), which leaves at once: time to first chunk
                conn.queue_write(data)
            if not more or not self.first_sent:
                self.first_sent = True
                conn.flush()
        if not more:
            conn.finished(self)

    def _start(self, status: int, headers: Any) -> None:
        head = [status_line(status), self.conn.state.date]
        lines = 3  # the status line, the date and the blank line that ends the head
        has_length = False
        for name, value in headers:
            if name == b"content-length":
                has_length = True
            elif name == b"connection" and value.lower() == b"close":
                self.keep_alive = False
                continue
            head += (name, b": ", value, b"\r\n")
            lines += 1
        if not has_length and not self.is_head and status >= 200 and status not in (204, 304):
            if self.scope["http_version"] == "1.0":  # no chunked coding in 1.0: the close ends the body
                self.keep_alive = False
            else:
                self.chunked = True
                head.append(b"transfer-encoding: chunked\r\n")
                lines += 1
        if not self.keep_alive or self.conn.state.stopping or not self.body_done:
            # a body still arriving: the connection closes after this answer (``Connection.finished``), so say so
            self.keep_alive = False
            head.append(b"connection: close\r\n")
            lines += 1
        elif self.scope["http_version"] == "1.0":  # a 1.0 client keeps the connection only when told so
            head.append(b"connection: keep-alive\r\n")
            lines += 1
        head.append(b"\r\n")
        joined = b"".join(head)
        if joined.count(b"\n") != lines or joined.count(b"\r") != lines:
            # a CR or LF inside a name or value would split the response. One count over the whole head,
            # not a search per header: bytes-in-bytes costs ~0.25 µs a call, 20 µs for a hit's headers.
            raise RuntimeError("a response header name or value contains CR or LF")
        if self.chunked and not self.conn.closed:  # a stream: its head leaves at the end of this loop turn
            self.conn.queue_write(joined)
        else:
            self.head = joined  # sent with the body, in one write
