"""A lean HTTP/1.1 server for the gateway's ASGI app, on uvloop + httptools.

Why our own: the HTTP server was the biggest single cost of a fast request. On
the bench box a hello-world ASGI app costs ~72 µs of CPU per request under
uvicorn, ~35 µs here, and ~15 µs as a bare protocol with no ASGI at all; a cache
hit was mostly server. This server does what uvicorn did for us and no more: the
connection side (``http1_connection``) parses, calls the app once per request and
writes each answer in as few writes as it can; this side listens, runs the
lifespan, closes idle connections and slow clients (a request head not done in
``head_timeout_s``, a request body with no bytes for ``body_timeout_s`` while the
server was reading: nginx's ``client_body_timeout``) in one sweep a second (no
timer per request), and shuts down gracefully.

What it speaks: HTTP/1.1 and 1.0, keep-alive, pipelined requests (answered in
order), request bodies with back-pressure, ``Expect: 100-continue``, HEAD,
chunked responses when no content-length is given, ASGI 3 ``http`` and
``lifespan``. Not: TLS, HTTP/2, websockets (an ``Upgrade`` offer, h2c or websocket, is
ignored: the request, body and all, is served as plain HTTP/1.1 and the connection kept:
``http1_upgrade``); put a proxy in front for those, or run with ``server.http: uvicorn``.

Shutdown (``should_exit`` or SIGINT/SIGTERM): stop accepting, close idle
connections, let requests in flight finish (up to ``graceful_timeout_s``, then
cancel them), close the rest, then the app's lifespan shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from aigw.http.http1_connection import ASGI_VERSION, Connection
from aigw.http.http1_exchange import date_line
from aigw.http.http1_state import App, ServerState

log = logging.getLogger("aigw.http.server")


class StartupFailed(RuntimeError):
    """The app's lifespan start-up failed (its own log says why): nothing was served."""


START_FAILED_EXIT = 3  # the process's exit code then (uvicorn's and gunicorn's too)


def cannot_listen(host: str, port: int, exc: OSError) -> StartupFailed:
    """A bind that failed, said as a person would (a port in use is the usual case): not a traceback."""
    why = os.strerror(exc.errno) if exc.errno else str(exc)  # uvloop's strerror repeats the address
    if isinstance(exc, socket.gaierror):  # the resolver's code: os.strerror reads it as "unknown error -2"
        why = f"the host name does not resolve to an address here ({exc.strerror or exc})"
    hint = " (another process, perhaps another aigw, holds it: stop it or choose another --port)" \
        if exc.errno == errno.EADDRINUSE else ""
    return StartupFailed(f"cannot listen on {host}:{port}: {why.lower()}{hint}")


class Lifespan:
    """The ASGI lifespan protocol: start-up before the first connection, shutdown after the last."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        try:
            await self.app({"type": "lifespan", "asgi": ASGI_VERSION, "state": {}}, self.inbox.get, self.answers.put)
        except Exception:
            log.exception("the app's lifespan failed")
            await self.answers.put({"type": "lifespan.startup.failed", "message": "lifespan raised"})

    async def startup(self) -> bool:
        self.task = asyncio.get_running_loop().create_task(self._run())
        await self.inbox.put({"type": "lifespan.startup"})
        answer = await self.answers.get()
        return bool(answer["type"] == "lifespan.startup.complete")

    async def abandon(self) -> None:
        """Stop a start-up that is still running (its hooks are cancelled where they wait)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def shutdown(self) -> None:
        if self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        answer = await self.answers.get()
        if answer["type"] != "lifespan.shutdown.complete":
            log.error("lifespan shutdown: %s", answer.get("message", answer["type"]))
        await self.task


class Server:
    """Serve ``app`` on ``host:port`` (or on ``sock``) until ``should_exit`` is set or a signal comes."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 4000, *, sock: Any = None,
                 graceful_timeout_s: float = 30, idle_timeout_s: float = 5, head_timeout_s: float = 30,
                 body_timeout_s: float = 30, backlog: int = 2048,
                 on_listen: Callable[[int], None] | None = None) -> None:
        self.app = app
        self.on_listen = on_listen
        self.host = host
        self.port = port
        self.sock = sock
        self.graceful_timeout_s = graceful_timeout_s
        self.backlog = backlog
        self.state = ServerState(app, idle_timeout_s, head_timeout_s, body_timeout_s)
        self.started = False
        self.should_exit = False
        self._exit = asyncio.Event()
        self.caught_signal: int | None = None

    async def serve(self, install_signals: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self._serve(loop)
        finally:  # on every way out: a start-up stopped or failed too, not only after serving
            if install_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        lifespan = Lifespan(self.app)
        try:
            started = await self._unless_stopped(lifespan.startup())
        except BaseException:  # serve itself was cancelled: the app's start-up must not run on without it
            await lifespan.abandon()
            raise
        if started is None:  # a signal while the app was starting (a database that does not answer, say)
            await lifespan.abandon()
            log.warning("stopped by a signal before start-up finished; nothing was served")
            return
        if not started:
            raise StartupFailed("the app failed to start (see the log above)")
        state = self.state
        try:
            if self.sock is not None:
                listener = await loop.create_server(lambda: Connection(state, loop), sock=self.sock,
                                                    backlog=self.backlog)
            else:
                listener = await loop.create_server(lambda: Connection(state, loop), self.host, self.port,
                                                    backlog=self.backlog, reuse_address=True)
        except OSError as exc:  # the port is taken, say: the app's shutdown runs, then a plain refusal
            await lifespan.shutdown()
            raise cannot_listen(self.host, self.port, exc) from None
        except BaseException:
            await lifespan.shutdown()
            raise
        self.port = int(listener.sockets[0].getsockname()[1])  # the real one when asked for port 0
        self.started = True
        if self.on_listen is not None:  # "listening" is said once it is true, never before the bind
            self.on_listen(self.port)
        try:
            await self._tick_until_exit(loop)
        finally:
            listener.close()
            await self._drain()
            await lifespan.shutdown()

    def _on_signal(self, sig: int) -> None:
        if self.caught_signal is not None and sig == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting
        self.caught_signal = sig
        self.should_exit = True
        self._exit.set()

    async def _unless_stopped(self, step: Coroutine[Any, Any, bool]) -> bool | None:
        """``step``'s answer, or None if a signal came first (``step`` is then cancelled): a process asked to
        stop while it starts stops, rather than ignore the signal until its start-up ends."""
        task = asyncio.ensure_future(step)
        stop = asyncio.ensure_future(self._exit.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():  # a signal came first, or this call is cancelled: the step goes too
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return None if task.cancelled() else task.result()

    async def _tick_until_exit(self, loop: asyncio.AbstractEventLoop) -> None:
        """Check for exit ten times a second; once a second refresh the date and close connections idle
        longer than ``idle_timeout_s``, still sending one request head after ``head_timeout_s``, or
        sending a request body that stalled for ``body_timeout_s``."""
        ticks = 0
        state = self.state
        state.now = loop.time()
        while not self.should_exit:
            await asyncio.sleep(0.1)
            state.now = loop.time()
            ticks += 1
            if ticks % 10 == 0:
                state.date = date_line()
                idle_limit = state.now - state.idle_timeout_s
                head_limit = state.now - state.head_timeout_s
                body_limit = state.now - state.body_timeout_s
                for conn in list(state.connections):
                    idle = conn.idle_since is not None and conn.idle_since < idle_limit and conn.is_idle()
                    if idle or conn.stalled(head_limit, body_limit):
                        conn.close()

    async def _drain(self) -> None:
        state = self.state
        state.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.graceful_timeout_s
        for conn in list(state.connections):
            if conn.is_idle():
                conn.close()
        if state.tasks:
            await asyncio.wait(list(state.tasks), timeout=self.graceful_timeout_s)
        if state.tasks:
            log.warning("shutdown: cancelling %d request(s) still running after %.0f s",
                        len(state.tasks), self.graceful_timeout_s)
            for task in list(state.tasks):
                task.cancel()
            await asyncio.gather(*state.tasks, return_exceptions=True)
        for conn in list(state.connections):
            conn.close()
        # a closed connection is gone once what its socket still held has left: an answer the app finished
        # but a slow reader has not taken yet is sent whole within the grace, not cut when the loop ends
        if state.connections:
            state.emptied = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.emptied.wait(), max(0.0, deadline - loop.time()))
        for conn in list(state.connections):
            conn.transport.abort()


def run(app: App, host: str, port: int, *, sock: Any = None, graceful_timeout_s: float = 30,
        on_listen: Callable[[int], None] | None = None) -> None:
    """Run the server on a new uvloop event loop until a signal; then exit by that signal, as a
    process stopped by it would (the caller sees SIGTERM, not a plain exit)."""
    import uvloop

    server = Server(app, host, port, sock=sock, graceful_timeout_s=graceful_timeout_s, on_listen=on_listen)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(server.serve(install_signals=True))
    if server.caught_signal is not None:
        signal.signal(server.caught_signal, signal.SIG_DFL)
        signal.raise_signal(server.caught_signal)
