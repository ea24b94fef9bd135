"""A plain snapshot of every deployment's health, for /admin/deployments, metrics and readiness."""

from __future__ import annotations

from collections.abc import Callable

from aigw.routing.breaker import CLOSED, HALF_OPEN, OPEN
from aigw.routing.router import Router
from aigw.routing.state import DeploymentState
from aigw.types import JSON


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def state_name(s: DeploymentState, now: float, wall: float) -> str:
    """One word for an operator: healthy, open, half_open, cooling (Retry-After) or capped (rpm/tpm)."""
    phase = s.breaker.phase(now)
    if phase != CLOSED:
        return phase
    if s.over_caps(wall):
        return "capped"
    return "cooling" if s.cool_until > now else "healthy"


def deployment_report(router: Router) -> list[JSON]:
    now, wall = router.clock.monotonic(), router.clock.now()
    out: list[JSON] = []
    for slot in router.slots():
        s, d = slot.state, slot.target.deployment
        calls, fails = s.error_rate(now)
        b = s.breaker
        out.append({
            "id": d.id,
            "model": d.name,
            "provider": d.provider,
            "upstream_model": d.model,
            "weight": d.weight,
            "strategy": router.policy(d.name).strategy,
            "state": state_name(s, now, wall),
            "breaker": b.phase(now),
            "breaker_retry_in_s": round(b.until - now, 3) if b.phase(now) == OPEN else None,
            "half_open_trials": b.trials if b.phase(now) == HALF_OPEN else 0,
            "inflight": s.inflight,
            "inflight_here": s.local_inflight,
            "latency_ewma_ms": _ms(s.latency_s),
            "ttft_ewma_ms": _ms(s.ttft_s),
            "window": {"seconds": b.cfg.window_s, "calls": calls, "failures": fails},
            "error_rate": round(fails / calls, 4) if calls else 0.0,
            "rpm": {"limit": d.rpm, "used": round(s.rpm.used(wall), 1)},
            "tpm": {"limit": d.tpm, "used": round(s.tpm.used(wall), 1)},
            "cooling_s": round(s.cool_until - now, 3) if s.cool_until > now else 0.0,
            "last_error": {"kind": s.last_error, "at": s.last_error_at} if s.last_error else None,
            "shared": s.shared_at > 0,
        })
    return out


def shared_report(router: Router) -> JSON:
    shared = router.book.shared
    if shared is None:
        return {"mode": "local"}
    last = getattr(shared, "last_sync", 0.0)
    return {
        "mode": "redis",
        "up": shared.up,
        "replica": getattr(shared, "replica", ""),
        "last_sync_s_ago": round(router.clock.monotonic() - last, 3) if last else None,
    }


def breaker_refresher(router: Router, set_breaker: Callable[[str, str], None]) -> Callable[[], None]:
    """A scrape hook that copies each deployment's breaker phase into a metrics gauge."""

    def refresh() -> None:
        now = router.clock.monotonic()
        for slot in router.slots():
            set_breaker(slot.state.id, slot.state.breaker.phase(now))

    return refresh
