"""The router's record of every deployment, and the one place outcomes are written.

The request path only touches in-process state here. When Redis is configured the
book hands failures and trial results to ``SharedState`` in background tasks, and
asks it (one short call) before letting a trial through a half-open breaker, so
that replicas do not all probe a recovering upstream at once.
"""

from __future__ import annotations

import logging
from typing import Protocol

from aigw.config.models import CircuitBreakerConfig, Deployment
from aigw.routing.breaker import HALF_OPEN, OPEN
from aigw.routing.retry import DEFAULT_COOL_S, DEPLOYMENT_DEAD
from aigw.routing.state import DeploymentState, Outcome
from aigw.supervise import Supervisor
from aigw.types import Clock

log = logging.getLogger("aigw.routing")


class Shared(Protocol):
    """What the book needs from the Redis-backed state (``shared_state.SharedState``)."""

    @property
    def up(self) -> bool: ...

    async def acquire(self, state: DeploymentState) -> int | None: ...

    async def record(self, state: DeploymentState, fails: int, outcome: str,
                     permit: tuple[int, int] = (-1, -1), kinds: str = "") -> None: ...


class HealthBook:
    def __init__(
        self, deployments: list[Deployment], cfg: CircuitBreakerConfig, clock: Clock,
        supervisor: Supervisor, costs: dict[str, float | None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.supervisor = supervisor
        costs = costs or {}
        self.states: dict[str, DeploymentState] = {
            d.id: DeploymentState(d, cfg, clock, costs.get(d.id)) for d in deployments
        }
        self.shared: Shared | None = None

    def state(self, deployment_id: str) -> DeploymentState:
        return self.states[deployment_id]

    async def admit_trial(self, s: DeploymentState) -> bool:
        """A half-open breaker lets a limited number of trial calls through (across replicas)."""
        if not s.breaker.try_trial(self.clock.monotonic()):
            return False
        shared = self.shared
        granted = None
        if shared is not None and shared.up:
            try:
                granted = await shared.acquire(s)
            except BaseException:
                s.breaker.release_trial()
                raise
            if granted == 0:
                s.breaker.release_trial()
                return False
        if granted != 1:
            s.unshared_trials += 1  # let through without a Redis permit (none, or Redis did not answer)
        return True

    def release_trial(self, s: DeploymentState) -> None:
        """A trial let through and then not made (cancelled, refused by the deployment's caps, rate limited):
        its permit goes back, here and in Redis, so another call (on any replica) may make the trial."""
        s.breaker.release_trial()
        permit = _end_trial(s)
        if permit is not None:
            self._share(s, 0, "trial_release", permit)

    def record(self, s: DeploymentState, outcome: Outcome | None, trial: bool) -> None:
        """Write how an attempt ended. ``None`` = cancelled: it says nothing of the upstream."""
        now = self.clock.monotonic()
        b = s.breaker
        if outcome is None or not (outcome.ok or outcome.failure):
            if trial:
                self.release_trial(s)
            if outcome is not None:  # rate limited: the deployment cools, its breaker is untouched
                self._note_error(s, outcome.kind)
                wait = DEFAULT_COOL_S if outcome.retry_after is None else outcome.retry_after  # 0: room again
                s.cool_until = max(s.cool_until, now + min(wait, self.cfg.cooldown_s))
                s.asked_until = max(s.asked_until, now + wait)  # what the upstream asked: decides waiting it out
            return
        if trial:
            _end_trial(s)  # its permit was used: the trial's result below settles the shared breaker
        if outcome.ok:
            s.pending_calls += 1
            if b.success(now, trial) and trial:
                s.dead.clear()  # it serves again: whatever had killed it is gone
                log.info("circuit closed for deployment %s (trial call succeeded)", s.id)
                self._share(s, 0, "trial_ok", kinds=_ALL_DEAD)
            return
        self._note_error(s, outcome.kind)
        self._note_dead(s, outcome.kind, now)
        was_half_open = trial and b.phase(now) == HALF_OPEN
        opened = b.failure(now, trial)
        if opened:
            log.warning("circuit opened for deployment %s after %s", s.id, outcome.kind)
        dead = _dead(outcome.kind)
        if was_half_open:
            self._share(s, 1, "trial_fail", kinds=dead)
        else:
            self._share(s, 1, "trip" if opened else "", kinds=dead)

    def probe_result(self, s: DeploymentState, ok: bool, shows: frozenset[str] = frozenset(),
                     kind: str = "") -> None:
        """An active probe: a failure (``kind``: its error's) counts like a failed call; a success ends an open
        cooldown early only when it shows gone every dead kind that may have opened the breaker (``shows``: the
        kinds of ``retry.DEPLOYMENT_DEAD`` this probe saw gone, ``probe.shown``). Without one (timeouts, 5xx) any
        success does; with one it cannot show (out of quota) the cooldown runs to its end."""
        now = self.clock.monotonic()
        if ok:
            if s.breaker.phase(now) == OPEN:
                unseen = self.dead_kinds(s, now) - shows
                if unseen:
                    log.debug("probe of %s answered; cooldown kept (%s not shown gone)", s.id,
                              ", ".join(sorted(unseen)))
                    return
                shared = self.shared
                if shared is not None and shared.up:  # Redis decides, with what every replica saw kill it
                    unshown = ",".join(sorted(DEPLOYMENT_DEAD - shows))
                    self.supervisor.spawn(shared.record(s, 0, "probe_ok", kinds=unshown), name="routing-record")
                else:
                    s.breaker.end_cooldown(now)
            return
        self._note_dead(s, kind, now)
        self._note_error(s, "probe_failed")
        opened = s.breaker.failure(now, trial=False)
        self._share(s, 1, "trip" if opened else "", kinds=_dead(kind))

    def dead_kinds(self, s: DeploymentState, now: float) -> frozenset[str]:
        """The dead kinds this replica saw that may have opened its breaker, open now: those seen since a window
        before it opened (a cooldown ago at most, or it would not be open)."""
        since = now - self.cfg.cooldown_s - self.cfg.window_s
        return frozenset(k for k, at in s.dead.items() if at >= since)

    @staticmethod
    def _note_dead(s: DeploymentState, kind: str, now: float) -> None:
        if kind in DEPLOYMENT_DEAD:
            s.dead[kind] = now

    def _note_error(self, s: DeploymentState, kind: str) -> None:
        s.last_error, s.last_error_at = kind, self.clock.now()

    def _share(self, s: DeploymentState, fails: int, outcome: str, permit: tuple[int, int] = (-1, -1),
               kinds: str = "") -> None:
        shared = self.shared
        if shared is not None and shared.up:
            self.supervisor.spawn(shared.record(s, fails, outcome, permit, kinds), name="routing-record")


_ALL_DEAD = ",".join(sorted(DEPLOYMENT_DEAD))  # a closed breaker forgets them all, in Redis too


def _dead(kind: str) -> str:
    """``kind`` if a failure of it kills a deployment (shared for other replicas' probes), else ''."""
    return kind if kind in DEPLOYMENT_DEAD else ""


def _end_trial(s: DeploymentState) -> tuple[int, int] | None:
    """One trial of ``s`` has ended: the Redis permit it held, if any. Trials do not carry their own permit,
    so those let through without one end first: a permit is given back late (at worst when its lease runs
    out), never while another trial may still be using it."""
    if s.unshared_trials > 0:
        s.unshared_trials -= 1
        return None
    return s.shared_permits.pop() if s.shared_permits else None
