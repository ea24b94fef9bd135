"""Start a real gateway (aigw's HTTP server + the app) on a loopback port in a background thread.

``server.http: uvicorn`` in the config serves it with uvicorn instead, as ``aigw serve`` would."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from aigw.app import build_app
from aigw.config.models import GatewayConfig
from aigw.http.http1_server import Server
from aigw.http.server import GatewayApp
from tests.support.servers import _start_loop_thread, free_port


@dataclass
class RunningGateway:
    url: str  # http://127.0.0.1:PORT
    app: GatewayApp
    loop: asyncio.AbstractEventLoop
    server: Server | uvicorn.Server

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def ready(self) -> tuple[int, dict[str, Any]]:
        """``GET /health/ready``: its status and body (a 503 too)."""
        try:
            with urllib.request.urlopen(self.url + "/health/ready", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def call(self, coro: Any, timeout: float = 10) -> Any:
        """Run a coroutine on the gateway's own loop (to read or poke its state)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def make_config(raw: dict[str, Any] | GatewayConfig) -> GatewayConfig:
    if isinstance(raw, GatewayConfig):
        return raw
    from aigw.config.load import _check_models, default_models

    config = GatewayConfig.model_validate(raw)
    if not config.models:
        config.models = default_models()
    _check_models(config, "(test)")
    return config


@contextmanager
def running_gateway(raw: dict[str, Any] | GatewayConfig) -> Iterator[RunningGateway]:
    with tempfile.TemporaryDirectory(prefix="aigw-gw-") as tmp:
        config = make_config(raw)
        if isinstance(raw, dict) and "database_url" not in raw:  # the default ./aigw.db: a directory of its own
            config.database_url = f"sqlite:///{tmp}/aigw.db"
        with _serving(config) as gw:
            yield gw


@contextmanager
def _serving(config: GatewayConfig) -> Iterator[RunningGateway]:
    app = build_app(config)
    port = free_port()
    server: Server | uvicorn.Server
    if config.server.http == "uvicorn":  # set up as ``cli/serve.py`` does, on this thread's loop
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, loop="none", http="httptools",
                                               lifespan="on", access_log=False, server_header=False,
                                               timeout_graceful_shutdown=5, log_level="warning",
                                               proxy_headers=False))
    else:
        server = Server(app, "127.0.0.1", port, graceful_timeout_s=5)
    loop, thread = _start_loop_thread("gateway")
    future = asyncio.run_coroutine_threadsafe(server.serve(), loop)
    deadline = time.monotonic() + 10
    while not server.started:
        if future.done():
            future.result()
        if time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.01)
    try:
        yield RunningGateway(f"http://127.0.0.1:{port}", app, loop, server)
    finally:
        server.should_exit = True
        future.result(timeout=60)  # generous: shutdown drains writers, and CI boxes can be busy
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
