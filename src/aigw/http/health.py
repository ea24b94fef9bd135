"""/health/live (the process answers) and /health/ready (it can serve, per dependency)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

from aigw.http.request import HttpRequest, Send
from aigw.http.respond import send_json

Status = Literal["ok", "degraded", "down"]
Check = Callable[[], Awaitable[tuple[Status, str]]]


class Health:
    """Readiness is the worst of the registered checks; only a 'down' critical check gives 503."""

    def __init__(self) -> None:
        self._checks: dict[str, tuple[Check, bool]] = {}

    def register(self, name: str, check: Check, critical: bool = True) -> None:
        self._checks[name] = (check, critical)

    async def live(self, req: HttpRequest, send: Send) -> None:
        await send_json(send, 200, {"status": "ok"})

    async def ready(self, req: HttpRequest, send: Send) -> None:
        results: dict[str, dict[str, str]] = {}
        overall: Status = "ok"
        serving = True
        for name, (check, critical) in self._checks.items():
            try:
                status, detail = await check()
            except Exception as exc:  # a broken check is a down dependency, not a crash
                status, detail = "down", type(exc).__name__
            results[name] = {"status": status, "detail": detail}
            if status != "ok" and overall == "ok":
                overall = "degraded"
            if status == "down" and critical:
                serving = False
        if not serving:
            overall = "down"
        await send_json(send, 200 if serving else 503, {"status": overall, "checks": results})
