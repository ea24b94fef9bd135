"""A deployment's own rpm/tpm caps, checked exactly when the router picks it.

The limits stage takes a deployment's caps in its own store step when the model
asked for has exactly one deployment. The others (a model with several
deployments, a fallback model's) are only known once the router has chosen one,
so the router asks ``DeploymentCaps.admit`` before each call: one more store step
(memory, or one Lua call on the shared Redis, so three replicas enforce one cap,
not three). A deployment that refuses is skipped for that request, as one at its
rate limit; when none is left the client gets a 429 with the shortest wait.

One object per request: it remembers what it took, and the limits stage settles
that when the request ends (the tokens of the deployment that answered; the
estimate of one that failed goes back, its request stays counted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aigw import errors
from aigw.pipeline.tenancy import TenancyServices
from aigw.stores.base import Scope


@dataclass(slots=True)
class Taken:
    scopes: list[Scope]  # the deployment's own scope, as one shared list
    est: int  # tokens taken from its tpm window
    taken_at: int  # the second that took them


@dataclass(slots=True)
class DeploymentCaps:
    """``admit`` for the router; ``taken`` for the limits stage's settlement."""

    svc: TenancyServices
    lists: dict[str, list[Scope]]  # deployment id -> [its scope], for every capped deployment
    slot: str
    est: int  # the prompt's token estimate
    skip: str | None  # the deployment the limits stage took already (the asked model's only one)
    now: Callable[[], float]  # the stores' clock
    taken: list[Taken] = field(default_factory=list)

    async def admit(self, deployment_id: str) -> float | None:
        """None: call it (taken, or not capped here); else the seconds until it has room."""
        scopes = self.lists.get(deployment_id)
        if scopes is None or deployment_id == self.skip:
            return None
        tpm = scopes[0].limits.tpm or 0
        est = min(self.est, tpm) if tpm else 0  # the estimate errs high: never refuse a prompt for good here
        try:
            answer, _ = await self.svc.gate.enter(scopes, self.slot, est, [], 0, self.now())
        except Exception as exc:
            self.svc.store_error("limits", exc)
            if self.svc.config.limits_on_store_error == "closed":
                raise errors.Unavailable("Rate limits cannot be checked right now; try again shortly.",
                                         retry_after=1.0) from None
            return None
        if not answer.allowed:
            return max(1.0, answer.retry_after_s)
        self.taken.append(Taken(scopes, est, answer.taken_at))
        return None
