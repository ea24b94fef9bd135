"""Shared bits of the routing integration tests: a fake OpenAI that timestamps arrivals, configs, clients."""

from __future__ import annotations

import time
from typing import Any

import openai
import requests
from aiohttp import web

from tests.fakes.openai_upstream import FakeOpenAI
from tests.support.gateway import RunningGateway

MASTER = "sk-routing-master"
UP_KEY = "sk-up"
MSGS = [{"role": "user", "content": "hello"}]


class TimedOpenAI(FakeOpenAI):
    """The fake OpenAI upstream, also noting when each request arrived (to check waits)."""

    def __init__(self) -> None:
        super().__init__(UP_KEY)
        self.arrivals: list[float] = []

    async def serve(self, op: str, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(time.monotonic())
        return await super().serve(op, request)

    def reset(self) -> None:
        super().reset()
        self.arrivals.clear()


def upstream(fake: FakeOpenAI, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "provider": "openai", "model": "gpt-4o-mini", "api_base": fake.base_url,
            "api_key": UP_KEY, **extra}


def mock(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "provider": "mock", **extra}


def config(models: list[dict[str, Any]], **rest: Any) -> dict[str, Any]:
    return {"server": {"master_key": MASTER}, "models": models, **rest}


def client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=MASTER, max_retries=0, timeout=10)


def deployments(gw: RunningGateway) -> dict[str, dict[str, Any]]:
    """GET /admin/deployments, by deployment id."""
    r = requests.get(gw.url + "/admin/deployments", headers={"Authorization": f"Bearer {MASTER}"}, timeout=5)
    r.raise_for_status()
    return {d["id"]: d for d in r.json()["data"]}


def by_model(gw: RunningGateway, model: str, provider: str) -> dict[str, Any]:
    return next(d for d in deployments(gw).values() if d["model"] == model and d["provider"] == provider)


class TcpProxy:
    """A loopback TCP proxy to a real service that a test can cut (to take Redis away mid-run)."""

    def __init__(self, target_port: int) -> None:
        import asyncio

        from tests.support.servers import _start_loop_thread, free_port

        self.port = free_port()
        self._target = target_port
        self._writers: set[asyncio.StreamWriter] = set()
        self.hung = False  # True: connections stay open but nothing passes (a server that stopped answering)
        self.loop, self._thread = _start_loop_thread("tcp-proxy")
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self.loop).result(5)

    async def _handle(self, reader: Any, writer: Any) -> None:
        import asyncio
        import contextlib

        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        self._writers |= {writer, up_writer}

        async def pipe(src: Any, dst: Any) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if not self.hung:
                        dst.write(data)
                        await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        """Stop accepting and drop every open connection."""
        import asyncio

        async def close() -> None:
            self._server.close()
            for w in self._writers:
                w.transport.abort()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)

    def stop(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
