"""What stages may be built from. ``app.py`` fills it; stage factories read it.

Every field a feature adds has a default, so a stage that does not need it never
sees it and tests can build a stage from a bare ``StageDeps(config=...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aigw.config.models import GatewayConfig
from aigw.routing.router import Router
from aigw.supervise import Supervisor
from aigw.types import Clock, SystemClock


@dataclass(slots=True)
class StageDeps:
    config: GatewayConfig
    router: Router | None = None
    supervisor: Supervisor = field(default_factory=Supervisor)
    clock: Clock = field(default_factory=SystemClock)
    redis: Any = None  # redis.asyncio.Redis when redis_url is set (key prefix in redis_prefix)
    redis_prefix: str = "aigw:"
    services: dict[str, Any] = field(default_factory=dict)  # feature objects by name (metrics, ledger, ...)
