"""A deployment's own rpm/tpm caps, checked exactly when the router picks it.

A cap counts the calls its deployment gets, so it is taken only once the router
has chosen that deployment: not for an answer from the cache, nor for a call
refused before routing. The router asks ``DeploymentCaps.admit`` before each call
to a capped deployment: one store step (memory, or one Lua call on the shared
Redis, so three replicas enforce one cap, not three) besides the limits stage's
own. A deployment that refuses is skipped for that request, as one at its rate
limit; when none is left the client gets a 429 with the shortest wait, and the
``x-ratelimit-*`` figures of the deployment that frees first. A prompt
that no wait would let through (over a deployment's whole tpm, counted with the
tokenizer) skips that deployment for good: with none left, the 429 says so, with the tokens figures of
the deployment with the largest tpm (the one the prompt comes nearest to fitting).

One object per request: it remembers what it took, and the limits stage settles
that when the request ends (the tokens of the deployment that answered; the
estimate of one that failed goes back, its request stays counted).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from aigw import errors
from aigw.config.models import Deployment
from aigw.pipeline.rate_headers import add_headers
from aigw.pipeline.tenancy import TenancyServices
from aigw.stores.base import Admission, Limits, Scope
from aigw.types import JSON


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
    est: int  # the prompt's token estimate (errs high)
    body: JSON  # the request, to count its prompt exactly when the estimate alone is over a cap
    now: Callable[[], float]  # the stores' clock
    taken: list[Taken] = field(default_factory=list)
    counted: int | None = None  # the prompt counted with the tokenizer, once needed
    # the refusal with the shortest wait (the deployment that frees first): its figures go into the 429's
    # x-ratelimit-* headers when every deployment is full (``route``); kept on a refusal only
    refused: Admission | None = None
    # of the deployments the prompt alone is over, the one with the largest tpm: its figures go into the 429 when
    # that leaves none (``too_large_headers``)
    too_large: list[Scope] | None = None

    async def admit(self, deployment_id: str) -> float | None:
        """None: call it (taken, or not capped); else the seconds until it has room (``math.inf``: never,
        the prompt alone is over its tpm)."""
        scopes = self.lists.get(deployment_id)
        if scopes is None:
            return None
        tpm = scopes[0].limits.tpm or 0
        est = self.est if tpm else 0
        if est > tpm:
            if self.counted is None:  # off the event loop: a big prompt takes milliseconds
                self.counted = await asyncio.to_thread(self.svc.tokens.count_prompt, self.body)
            if self.counted > tpm:
                if self.too_large is None or tpm > (self.too_large[0].limits.tpm or 0):
                    self.too_large = scopes
                return math.inf
            est = self.counted
        while True:
            try:
                answer, _ = await self.svc.gate.enter(scopes, self.slot, est, [], 0, self.now())
            except Exception as exc:
                self.svc.store_error("limits", exc)
                if self.svc.config.limits_on_store_error == "closed":
                    raise errors.Unavailable("Rate limits cannot be checked right now; try again shortly.",
                                             retry_after=1.0, code="store_unavailable") from None
                return None
            if answer.allowed or answer.reason != "tpm" or est == self.counted:
                break
            # the estimate errs high: refused on tokens, asked once more with the prompt counted (nothing was taken)
            if self.counted is None:
                self.counted = await asyncio.to_thread(self.svc.tokens.count_prompt, self.body)
            if self.counted >= est:
                break
            est = self.counted
        if not answer.allowed:
            if self.refused is None or answer.retry_after_s < self.refused.retry_after_s:
                self.refused = answer
            return max(1.0, answer.retry_after_s)
        self.taken.append(Taken(scopes, est, answer.taken_at))
        return None

    async def too_large_headers(self, out: dict[str, str]) -> None:
        """The x-ratelimit-*-tokens figures of ``too_large`` (as they stand: one read of the store, nothing
        taken), for a prompt too large for every deployment; if the read fails, its limit alone."""
        if self.too_large is None:
            return
        out["x-ratelimit-limit-tokens"] = str(self.too_large[0].limits.tpm)
        try:
            figures = (await self.svc.gate.peek(self.too_large))[0]
        except Exception as exc:
            self.svc.store_error("limits", exc, "peek")
            return
        add_headers(out, replace(figures, limit_requests=None))  # its tokens; the requests figures stay the key's


def capped_deployments(models: list[Deployment]) -> dict[str, list[Scope]]:
    """Every deployment with an rpm or tpm cap of its own, as [its scope] by deployment id (a list made once:
    stores may cache by the list)."""
    return {d.id: [Scope("deployment", d.id, Limits(rpm=d.rpm, tpm=d.tpm))] for d in models if d.rpm or d.tpm}


async def settle_side_call(caps: DeploymentCaps, answered: tuple[str, int] | None, cut: list[tuple[str, int]]) -> None:
    """Settle what a stage's own upstream call (the semantic cache's embedding) took from the caps: the tokens of
    the deployment that ``answered`` (id, tokens) on its last take, each ``cut`` call's billed prompt on a take of
    its deployment, nothing for a try that failed before its upstream took it (its request stays counted). A
    store that fails leaves the estimate counted (it leaves the window within the minute)."""
    cut_by: dict[str, list[int]] = {}
    for dep, n in cut:
        cut_by.setdefault(dep, []).append(n)
    last = {t.scopes[0].id: i for i, t in enumerate(caps.taken)}
    now = caps.now()
    steps = []
    for i, t in enumerate(caps.taken):
        dep = t.scopes[0].id
        if not t.scopes[0].limits.tpm:
            continue
        if answered is not None and answered[0] == dep and last[dep] == i:
            used = answered[1]
        else:
            used = cut_by[dep].pop(0) if cut_by.get(dep) else 0
        if used != t.est:
            steps.append(caps.svc.gate.leave(t.scopes, caps.slot, used - t.est, t.taken_at, [], 0, 0, now, []))
    for step in steps:
        try:
            await step
        except Exception as exc:
            caps.svc.store_error("limits", exc, "leave")
