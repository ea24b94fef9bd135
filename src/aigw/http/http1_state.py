"""What every connection of one aigw HTTP/1 server shares: the app, the time limits, the clock and date line
the sweep refreshes, the live connections and the tasks of requests still running (shutdown waits for them)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aigw.http.http1_exchange import date_line

if TYPE_CHECKING:
    from aigw.http.http1_connection import Connection

App = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
               Awaitable[None]]


class ServerState:
    """What every connection of one server shares."""

    def __init__(self, app: App, idle_timeout_s: float, head_timeout_s: float = 30, body_timeout_s: float = 30) -> None:
        self.app = app
        self.idle_timeout_s = idle_timeout_s
        self.head_timeout_s = head_timeout_s
        self.body_timeout_s = body_timeout_s
        self.now = 0.0  # the loop's clock, refreshed ten times a second: stamps cost no call
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.date = date_line()
        self.stopping = False
        self.emptied: asyncio.Event | None = None  # set at shutdown: told when the last connection is gone


def address(value: Any) -> tuple[str, int] | None:
    """A socket's address as the ASGI scope has it (``server``, ``client``): host and port, or None."""
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None
