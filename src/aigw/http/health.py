"""/health/live (the process answers) and /health/ready (it can serve, per dependency)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

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
        # side by side: hung stores cost the longest of their timeouts, not the sum (a probe's own timeout,
        # often 1 s, must not run out while non-critical checks wait their turn)
        answers = await asyncio.gather(*(_run(check) for check, _ in self._checks.values()))
        for (name, (_, critical)), (status, detail) in zip(self._checks.items(), answers, strict=True):
            results[name] = {"status": status, "detail": detail}
            if status != "ok" and overall == "ok":
                overall = "degraded"
            if status == "down" and critical:
                serving = False
        if not serving:
            overall = "down"
        await send_json(send, 200 if serving else 503, {"status": overall, "checks": results})


async def _run(check: Check) -> tuple[Status, str]:
    try:
        return await check()
    except Exception as exc:  # a broken check is a down dependency, not a crash
        return "down", type(exc).__name__


# -- dependency checks (app.py registers the ones that exist) ---------------------------
def redis_check(redis: Any, timeout_s: float = 0.5) -> Check:
    """Redis answers PING: ok; else down (not critical: shared state fails open or closed by policy)."""

    async def check() -> tuple[Status, str]:
        try:
            async with asyncio.timeout(timeout_s):
                await redis.ping()
        except Exception as exc:
            return "down", type(exc).__name__
        return "ok", "ping"

    return check


def database_check(ping: Callable[[], Awaitable[None]], timeout_s: float = 1.0) -> Check:
    """The database answers a trivial query: ok; else down (records are buffered meanwhile)."""

    async def check() -> tuple[Status, str]:
        try:
            async with asyncio.timeout(timeout_s):
                await ping()
        except Exception as exc:
            return "down", type(exc).__name__
        return "ok", "select 1"

    return check


def breakers_check(states: Callable[[], dict[str, str]]) -> Check:
    """Deployments' circuit breakers: all closed ok, some open degraded, every one open down."""

    async def check() -> tuple[Status, str]:
        current = states()
        if not current:
            return "ok", "no deployments"
        unhealthy = sorted(d for d, s in current.items() if s != "closed")
        if not unhealthy:
            return "ok", f"{len(current)} closed"
        detail = ", ".join(f"{d}={current[d]}" for d in unhealthy)
        every_open = all(s == "open" for s in current.values())
        return ("down" if every_open else "degraded"), detail

    return check


def register_breakers(health: Health, deployment_ids: list[str], phases: Callable[[], dict[str, str]]) -> None:
    """``breaker:<id>`` per deployment (half-open degraded, open down; not critical) and
    ``deployments`` (critical: down only when every breaker is open, the gateway cannot serve)."""
    snap: dict[str, Any] = {"at": -1.0, "states": {}}

    def states() -> dict[str, str]:  # one snapshot serves every check of one /health/ready call
        now = time.monotonic()
        if now - snap["at"] > 0.002:
            snap["at"], snap["states"] = now, phases()
        return snap["states"]  # type: ignore[no-any-return]

    def one(deployment_id: str) -> Check:
        async def check() -> tuple[Status, str]:
            phase = states().get(deployment_id, "closed")
            return {"closed": "ok", "half_open": "degraded"}.get(phase, "down"), phase  # type: ignore[return-value]

        return check

    for deployment_id in deployment_ids:
        health.register(f"breaker:{deployment_id}", one(deployment_id), critical=False)
    health.register("deployments", breakers_check(states), critical=True)
