"""Run aiohttp fake upstreams and the gateway on loopback ports in background threads.

Each server gets its own event loop in a daemon thread, so sync SDK clients and
async tests can both talk to it; ``stop()`` shuts it down and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def unaccepting_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: connects hang (the kernel drops their SYNs), as to a
    black-holed host, until the caller's connect timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = int(server.getsockname()[1])
    fillers = []
    try:
        for _ in range(3):
            s = socket.socket()
            fillers.append(s)
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
        yield port
    finally:
        for s in [*fillers, server]:
            s.close()


@dataclass
class RunningServer:
    url: str  # http://127.0.0.1:PORT
    port: int
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    _stop: Callable[[], Awaitable[None]]

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._stop(), self.loop)
        try:
            fut.result(timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)

    def call(self, coro: Awaitable[Any], timeout: float = 10) -> Any:
        """Run a coroutine on the server's loop (to inspect or poke its state)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]


def _start_loop_thread(name: str) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    ready.wait(5)
    return loop, thread


def start_aiohttp_app(app: web.Application, name: str = "fake-upstream") -> RunningServer:
    """Serve an aiohttp app on 127.0.0.1:<free port> in a background thread."""
    loop, thread = _start_loop_thread(name)
    port = free_port()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()

    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    return RunningServer(f"http://127.0.0.1:{port}", port, loop, thread, runner.cleanup)
