"""Build the router from config: policies, breakers, costs, and (when set) Redis sharing and the probe."""

from __future__ import annotations

from typing import Any

from aigw.accounting.pricing import PriceBook
from aigw.config.models import Deployment, GatewayConfig
from aigw.routing.probe import Prober
from aigw.routing.router import Router, Target
from aigw.routing.shared_state import SharedState
from aigw.supervise import Supervisor
from aigw.types import Clock


def costs(deployments: list[Deployment]) -> dict[str, float | None]:
    """What ``lowest_cost`` ranks by: input + output USD per million tokens (config ``prices:`` over
    the shipped table); None when neither knows the model."""
    book = PriceBook(deployments)
    out: dict[str, float | None] = {}
    for d in deployments:
        if d.prices is None and book.lookup(d.model) is None and book.lookup(d.name) is None:
            out[d.id] = None
        else:
            p = book.for_deployment(d.id, d.model)
            out[d.id] = p.input + p.output
    return out


def build_router(
    config: GatewayConfig, targets: list[Target], supervisor: Supervisor, redis: Any = None,
    clock: Clock | None = None, replica: str | None = None,
) -> Router:
    by_cost = any(rule.strategy == "lowest_cost" for rule in config.routing.values())
    prices = costs([t.deployment for t in targets]) if by_cost else None  # read the table only when used
    router = Router(targets, default_timeout_s=config.server.request_timeout_s, routing=config.routing,
                    breaker=config.circuit_breaker, clock=clock, supervisor=supervisor, costs=prices)
    if redis is not None:
        shared = SharedState(redis, config.redis_prefix, router.book, config.circuit_breaker, replica=replica)
        router.book.shared = shared
        router.add_background("routing-shared-state", shared.run, shared.stop)
    if config.circuit_breaker.probe_interval_s is not None:
        prober = Prober(router.book, [(s.state, s.target.provider) for s in router.slots()],
                        config.circuit_breaker)
        router.add_background("routing-probe", prober.run, prober.stop)
    return router
