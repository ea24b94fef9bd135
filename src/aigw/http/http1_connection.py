"""One HTTP/1.1 client connection of aigw's server: parsing, one app call per request, answers in order.

The listening, start-up and shutdown side is ``http1_server``, which also says
why the gateway has its own server; one request and its answer are an
``http1_exchange.Exchange``. Here: one httptools parser per connection, one app
call per request (run at once, after the bytes that came with its head were parsed,
and a task only once it waits: ``eager``; a pipelined one in a task of its own),
pipelined requests answered in order, a request body buffered up to ``HIGH_WATER``
before reading pauses, stream parts of one loop turn written together, and the time
stamps the server's sweep uses to cut idle and slow clients.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from typing import Any
from urllib.parse import unquote

import httptools

from aigw.http import http1_head, http1_upgrade
from aigw.http.eager import start_eagerly
from aigw.http.http1_exchange import EXCHANGE, Exchange, status_line
from aigw.http.http1_head import MAX_HEAD_BYTES, TRAILERS, HeadTooLarge, UrlTooLong, charged
from aigw.http.http1_state import ServerState, address

log = logging.getLogger("aigw.http.server")


ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
HIGH_WATER = 64 * 1024  # request body buffered per request before reading pauses
LINGER_QUIET_S = 2.0  # a connection closing in stages closes once the client sent nothing for this long...
LINGER_MAX_S = 30.0  # ...or after this long in all (nginx: lingering_timeout 5 s, lingering_time 30 s)


class _Discard:
    """The parser of a connection closing in stages: what the client still sends is read and dropped."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def feed_data(self, data: bytes) -> None:
        self.conn.body_since = self.conn.state.now


class Connection(asyncio.Protocol):
    """One client connection: parses requests, runs the app once per request, keeps responses in order."""

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made
        self.parser = httptools.HttpRequestParser(self)
        self.current: Exchange | None = None  # the request the app is answering
        self.parsing: Exchange | None = None  # the request whose body is arriving (may be queued)
        self.starting: Exchange | None = None  # its head parsed: run once this read is parsed (its body with it)
        self.queue: deque[Exchange] = deque()  # pipelined requests waiting for the current one
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0  # the reads of a head that spans several, before the one it ends in
        self.read_size = 0  # the bytes of the read being parsed
        self.ended_in_read = False  # a request ended in the read being parsed: a head begun after it shares the read
        self.expect_continue = False
        self.upgrade_head: bytes | None = None  # an upgrade offer's head, to parse again as a plain request
        self.read_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.out: list[bytes] = []  # streamed parts waiting for the end of this loop turn
        self.out_size = 0
        self.flush_handle: asyncio.Handle | None = None
        self.closed = False
        self.idle_since: float | None = None  # waiting for a next request since (keep-alive)
        self.head_since: float | None = None  # receiving a request head since (slow clients are cut)
        self.body_since: float | None = None  # a request body's last bytes came then (it stalled: cut)
        self.linger_since: float | None = None  # closing in stages since (``_linger``)
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.context = contextvars.copy_context()  # the connection's: a pipelined request runs in a copy

    # -- transport events ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server = address(transport.get_extra_info("sockname"))
        self.client = address(transport.get_extra_info("peername"))
        self.idle_since = self.state.now
        self.state.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.read_size = len(data)
        self.ended_in_read = False
        try:
            self.parser.feed_data(data)
            refused = None
        except httptools.HttpParserUpgrade as exc:  # an upgrade offer: ignored, parsed as plain HTTP
            refused = http1_upgrade.resume(self, data, exc.args[0])
        except httptools.HttpParserError as exc:  # llhttp's own finding, or a check of ours (``http1_head``)
            refused = http1_head.refused_by(exc)
        if refused is not None:
            self._refuse(refused.status, refused.message)
        elif self.head_since is not None:  # a head still incomplete: its reads so far count against the limit
            # (a request ended in this read: the head still arriving began in it, after that request's bytes)
            self.head_bytes = charged(self.head_bytes, self.ended_in_read, len(data), self.url, self.headers)
            if self.head_bytes > MAX_HEAD_BYTES:
                self._refuse(HeadTooLarge.status, HeadTooLarge.message)
        ex = self.starting
        if ex is not None:  # a body that came with its head is whole now: the app reads it without waiting
            self.starting = None
            self._run(ex)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        state = self.state
        state.connections.discard(self)
        if state.emptied is not None and not state.connections:
            state.emptied.set()
        for ex in (self.current, self.parsing, *self.queue):
            if ex is not None:
                ex.disconnected = True
                ex.wake()
                ex.cancel_if_asked()
        self.queue.clear()
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        if self.closed or not self.write_paused:
            return
        self.drain_waiter = self.loop.create_future()
        try:
            await self.drain_waiter
        finally:
            self.drain_waiter = None

    def resume_reading(self) -> None:
        if self.read_paused and not self.queue and not self.closed:
            self.read_paused = False
            if self.body_since is not None:  # the pause was ours: the client's time starts again
                self.body_since = self.state.now
            self.transport.resume_reading()

    def _pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.expect_continue = False
        self.idle_since = None
        self.head_since = self.state.now

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_HEAD_BYTES:
            raise UrlTooLong()

    def on_header(self, name: bytes, value: bytes) -> None:
        """Called once a header (an SDK sends ~15), so kept short: a head is checked once whole (``http1_head``)."""
        name = name.lower()
        self.headers.append((name, value))
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True

    def on_headers_complete(self) -> None:
        parser = self.parser
        url = self.url
        version = parser.get_http_version()
        http1_head.check(version, url, self.headers, self.head_bytes > 0 or self.read_size > MAX_HEAD_BYTES)
        self.head_since = None
        if url[:1] == b"/":
            raw_path, _, query = url.partition(b"?")
        else:  # absolute form (GET http://host/path) or "*"
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path or b"/", parsed.query or b""
        text = raw_path.decode("latin-1")
        method = parser.get_method()
        if parser.should_upgrade() and method != b"CONNECT":  # an upgrade offer: served as a plain request once
            self.upgrade_head = http1_upgrade.replayed_head(method, url, version, self.headers)  # the parser pauses
            return
        scope: dict[str, Any] = {
            "type": "http", "asgi": ASGI_VERSION, "http_version": version,
            "server": self.server, "client": self.client, "scheme": "http",
            "method": method.decode("latin-1"), "root_path": "",
            "path": unquote(text) if "%" in text else text, "raw_path": raw_path,
            "query_string": query, "headers": self.headers,
        }
        self.headers = TRAILERS  # what on_header hears from here to the next request: dropped (``http1_head``)
        # RFC 9110 10.1.1: a 1.0 client's "100-continue" is ignored (no 1xx may be sent to it)
        expect = self.expect_continue and version != "1.0"
        ex = scope[EXCHANGE] = Exchange(self, scope, parser.should_keep_alive() and not self.state.stopping, expect)
        self.parsing = ex
        # until the message is complete (at once for a request without a body); a client that asked to
        # hear "100 Continue" first waits for it, so its clock starts when that is sent (``Exchange.receive``)
        self.body_since = None if expect else self.state.now
        if self.current is None:
            self.current = ex
            self.starting = ex
        else:  # pipelined: answered after the ones before it; stop reading more meanwhile
            self.queue.append(ex)
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is None or ex.complete:
            return  # answered already (e.g. refused before reading): the rest of the body is dropped
        ex.chunks.append(body)
        ex.buffered += len(body)
        self.body_since = self.state.now
        if ex.buffered > HIGH_WATER:
            self._pause_reading()
        ex.wake()

    def on_message_complete(self) -> None:
        self.body_since = None
        self.ended_in_read = True
        ex = self.parsing
        if ex is not None:
            ex.body_done = True
            ex.wake()
            self.parsing = None

    # -- running the app ----------------------------------------------------------------------

    def _run(self, ex: Exchange) -> None:
        task = ex.task = start_eagerly(self.loop, self._call_app(ex))
        if task is not None:  # it waits for something: the server's shutdown waits for it
            self._track(task)

    def _run_next(self, ex: Exchange) -> None:
        """A pipelined request, once the one before is answered: in a Task (run at once, each answered without
        waiting would run the next in its stack: hundreds overflowed it), in a copy of the connection's context
        (not of that call's: a context variable it set, a trace's span, is not the next request's)."""
        task = ex.task = self.loop.create_task(self._call_app(ex), context=self.context.copy())
        self._track(task)

    def _track(self, task: asyncio.Task[None]) -> None:
        tasks = self.state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _call_app(self, ex: Exchange) -> None:
        try:
            await self.state.app(ex.scope, ex.receive, ex.send)
        except asyncio.CancelledError:
            self._abort(ex)
            raise
        except Exception:
            log.exception("error in the app answering %s %s", ex.scope["method"], ex.scope["path"])
            self._abort(ex)
        else:
            if not ex.complete:
                if not ex.disconnected:  # an app may stop answering a client that left: that is no error
                    log.error("the app returned without completing its answer to %s %s",
                              ex.scope["method"], ex.scope["path"])
                self._abort(ex)
        finally:  # the scope and its Exchange refer to each other: a cycle only the GC would free (with the
            ex.scope.pop(EXCHANGE, None)  # headers, the body's chunks), not at once, ~2,500 requests' worth at a time

    def _abort(self, ex: Exchange) -> None:
        """The app failed: a 500 if nothing was sent yet, else the connection is cut (the client sees a
        truncated answer, never a wrong one)."""
        if ex.complete:
            return
        if not ex.started and not self.closed:
            self._answer_and_close(500, "Internal server error.")
        ex.complete = True
        ex.wake()
        if self.linger_since is None:  # (a lingering close, after a bad request's 400, ends on its own)
            self.close()

    def finished(self, ex: Exchange) -> None:
        """The answer to ``ex`` is complete: next pipelined request, or wait for one."""
        ex.wake()
        self.current = None
        if self.closed:
            return
        if not ex.body_done:  # a body still arriving after the answer would be read as the next request
            self._linger()
            return
        if not ex.keep_alive or self.state.stopping:
            self.close()
            return
        if self.queue:
            nxt = self.queue.popleft()
            self.current = nxt
            if not self.queue:
                self.resume_reading()
            self._run_next(nxt)
        else:
            self.idle_since = self.state.now
            self.resume_reading()

    def _refuse(self, status: int, message: str) -> None:
        current = self.current
        if current is not None and current is not self.parsing:  # a later request is bad: answer the one in
            self._pause_reading()  # flight, then close; read nothing more
            current.keep_alive = False
            return
        # no request in flight, or it is the one whose body turned out malformed (a transfer coding other than
        # chunked last, a bad chunk): its body can never arrive, so the app hears the client is gone (when
        # the connection is lost) and the client gets the 400 itself, unless its answer began already
        if (current is None or not current.started) and not self.closed:
            self._answer_and_close(status, message)
        if current is not None:
            current.disconnected = True
            current.wake()
            current.cancel_if_asked()
        self._linger()

    def _answer_and_close(self, status: int, message: str) -> None:
        """The server's own answer (a 400, a 500 for a failed app) in the gateway's JSON error shape, on a
        connection that closes after."""
        body = http1_head.refusal_body(status, message)
        self.transport.write(status_line(status) + self.state.date + b"content-type: application/json\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(body), body))

    def queue_write(self, data: bytes) -> None:
        """Stream parts sent in one loop turn (an upstream read often holds many events) leave in one
        write at its end: one system call instead of one per event. Past ``HIGH_WATER`` they leave now."""
        self.out.append(data)
        self.out_size += len(data)
        if self.out_size >= HIGH_WATER:
            self.flush()
        elif self.flush_handle is None:
            self.flush_handle = self.loop.call_soon(self.flush)

    def flush(self) -> None:
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        out = self.out
        if out:
            self.out = []
            self.out_size = 0
            if not self.closed:
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self.closed = True
        self.transport.close()  # a second call does nothing; after ``_linger`` it ends the lingering

    def _linger(self) -> None:
        """Close in stages (RFC 9112 9.6) a connection whose client may still be sending (a body after an early
        answer, the rest of a bad request): shut this side, read and drop what still comes, close when the
        client closes or goes quiet. Closed at once, unread bytes make the kernel reset the connection, and a
        client that reads only once it has sent everything (http.client, urllib) lost the answer to the reset."""
        if self.closed:
            return
        self.flush()
        self.closed = True  # nothing more is written or parsed
        self.parsing = None
        self.parser = _Discard(self)  # type: ignore[assignment]  # a stand-in: no request is parsed any more
        self.linger_since = self.body_since = self.state.now
        self.head_since = None
        self.transport.write_eof()  # once what was written has left
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def is_idle(self) -> bool:
        return self.current is None and self.parsing is None

    def stalled(self, head_limit: float, body_limit: float) -> bool:
        """Still sending a request head that began before ``head_limit``, or a request body with no
        bytes since ``body_limit`` while this side was reading (a pause for back-pressure is ours); or closing in
        stages, with the client quiet for ``LINGER_QUIET_S`` or lingering for ``LINGER_MAX_S``."""
        if self.linger_since is not None:
            now = self.state.now
            return (self.body_since or 0) < now - LINGER_QUIET_S or self.linger_since < now - LINGER_MAX_S
        if self.head_since is not None and self.head_since < head_limit:
            return True
        return self.body_since is not None and self.body_since < body_limit and not self.read_paused
