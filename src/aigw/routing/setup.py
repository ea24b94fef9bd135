"""Build the router from config: policies, breakers, costs, and (when set) Redis sharing and the probe."""

from __future__ import annotations

from typing import Any

from aigw.config.models import Deployment, GatewayConfig
from aigw.routing.probe import Prober
from aigw.routing.router import Router, Target
from aigw.routing.shared_state import SharedState
from aigw.supervise import Supervisor
from aigw.types import Clock


def price_per_mtok(d: Deployment) -> float | None:
    """What ``lowest_cost`` ranks by: input + output USD per million tokens, when known."""
    p = d.prices
    if p is None or (p.input_per_mtok is None and p.output_per_mtok is None):
        return None
    return (p.input_per_mtok or 0.0) + (p.output_per_mtok or 0.0)


def build_router(
    config: GatewayConfig, targets: list[Target], supervisor: Supervisor, redis: Any = None,
    clock: Clock | None = None, replica: str | None = None,
) -> Router:
    costs = {t.deployment.id: price_per_mtok(t.deployment) for t in targets}
    router = Router(targets, default_timeout_s=config.server.request_timeout_s, routing=config.routing,
                    breaker=config.circuit_breaker, clock=clock, supervisor=supervisor, costs=costs)
    if redis is not None:
        shared = SharedState(redis, config.redis_prefix, router.book, config.circuit_breaker, replica=replica)
        router.book.shared = shared
        router.add_background("routing-shared-state", shared.run, shared.stop)
    if config.circuit_breaker.probe_interval_s is not None:
        prober = Prober(router.book, [(s.state, s.target.provider) for s in router.slots()],
                        config.circuit_breaker)
        router.add_background("routing-probe", prober.run, prober.stop)
    return router
