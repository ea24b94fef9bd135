"""What one replica knows of each deployment: breaker, in-flight calls, latency, quota use.

Everything here is plain in-process state, updated on the request path with a few
integer and float operations. With Redis configured, ``shared_state`` pushes this
replica's numbers out and folds the other replicas' back in, in the background.
"""

from __future__ import annotations

from dataclasses import dataclass

from aigw.config.models import CircuitBreakerConfig, Deployment
from aigw.routing.breaker import Breaker
from aigw.types import Clock

EWMA_ALPHA = 0.2  # weight of the newest sample in the latency averages


class MinuteCounter:
    """Requests (or tokens) in the last minute: a sliding estimate over two fixed minutes.

    ``pending`` is what this replica added since its last push to Redis; once a shared
    total has been adopted, ``used`` is that total plus what is still pending.
    """

    __slots__ = ("cur", "minute", "pending", "prev", "shared")

    def __init__(self) -> None:
        self.minute = -1
        self.cur = 0
        self.prev = 0
        self.pending = 0
        self.shared: float | None = None

    def _roll(self, now: float) -> float:
        minute = int(now // 60)
        if minute != self.minute:
            self.prev = self.cur if minute == self.minute + 1 else 0
            self.cur, self.minute = 0, minute
        return (now % 60) / 60

    def add(self, now: float, n: int) -> None:
        self._roll(now)
        self.cur += n
        self.pending += n

    def used(self, now: float) -> float:
        if self.shared is not None:
            return self.shared + self.pending
        frac = self._roll(now)
        return self.prev * (1.0 - frac) + self.cur

    def take_pending(self) -> int:
        n, self.pending = self.pending, 0
        return n


@dataclass(slots=True)
class Outcome:
    """How one attempt ended, as the breaker and the statistics see it."""

    ok: bool  # the deployment answered (a 4xx about the request still counts as an answer)
    failure: bool  # counts against the breaker
    kind: str = ""  # error kind, when there was one
    retry_after: float | None = None


class DeploymentState:
    """One deployment as seen by this replica (plus other replicas' numbers when shared)."""

    __slots__ = ("asked_until", "breaker", "capped", "clock", "cool_until", "cost", "dead", "deployment", "id",
                 "last_error", "last_error_at", "latency_s", "local_inflight", "others_inflight", "own_latency_s",
                 "own_ttft_s", "pending_calls", "rpm", "shared_at", "shared_permits", "shared_window", "tpm",
                 "ttft_s", "unshared_trials", "weight")

    def __init__(
        self, deployment: Deployment, cfg: CircuitBreakerConfig, clock: Clock, cost: float | None = None
    ) -> None:
        self.deployment = deployment
        self.clock = clock
        self.capped = deployment.rpm is not None or deployment.tpm is not None
        self.id = deployment.id
        self.weight = deployment.weight
        self.cost = cost
        self.breaker = Breaker(cfg)
        self.local_inflight = 0
        self.others_inflight = 0
        self.latency_s: float | None = None  # used for routing: shared mean, moved by local samples
        self.ttft_s: float | None = None
        self.own_latency_s: float | None = None  # this replica's own averages (what it publishes)
        self.own_ttft_s: float | None = None
        self.rpm = MinuteCounter()
        self.tpm = MinuteCounter()
        self.cool_until = 0.0  # monotonic; set from an upstream Retry-After
        self.asked_until = 0.0  # monotonic: when that Retry-After ends, uncapped (cool_until is capped to cooldown_s)
        self.last_error = ""
        self.dead: dict[str, float] = {}  # dead kind (retry.DEPLOYMENT_DEAD) -> monotonic time it was last seen
        self.last_error_at = 0.0  # wall clock
        self.shared_at = 0.0  # monotonic time of the last shared update, 0 = never
        self.shared_window: tuple[int, int] | None = None  # (calls, failures) across replicas
        self.pending_calls = 0  # good calls not yet added to the shared breaker window
        self.shared_permits: list[tuple[int, int]] = []  # Redis trial permits held here: (gen, lease) each
        self.unshared_trials = 0  # trials let through without one (no Redis, or it did not answer)

    # -- what the strategies read ------------------------------------------------
    @property
    def inflight(self) -> int:
        return self.local_inflight + self.others_inflight

    def remaining(self) -> float:
        """Share of the tighter of this deployment's rpm/tpm caps still free (1.0 if uncapped)."""
        d = self.deployment
        if d.rpm is None and d.tpm is None:
            return 1.0
        now = self.clock.now()
        left = 1.0
        if d.rpm is not None:
            left = min(left, 1.0 - self.rpm.used(now) / d.rpm)
        if d.tpm is not None:
            left = min(left, 1.0 - self.tpm.used(now) / d.tpm)
        return max(0.0, left)

    # -- bookkeeping -----------------------------------------------------------------
    def over_caps(self, now_wall: float) -> bool:
        d = self.deployment
        if d.rpm is not None and self.rpm.used(now_wall) >= d.rpm:
            return True
        return d.tpm is not None and self.tpm.used(now_wall) >= d.tpm

    def started(self) -> None:
        self.local_inflight += 1
        if self.deployment.rpm is not None:
            self.rpm.add(self.clock.now(), 1)

    def ended(self) -> None:
        self.local_inflight -= 1

    def sample_latency(self, seconds: float) -> None:
        self.own_latency_s = _ewma(self.own_latency_s, seconds)
        self.latency_s = _ewma(self.latency_s, seconds)

    def sample_ttft(self, seconds: float) -> None:
        self.own_ttft_s = _ewma(self.own_ttft_s, seconds)
        self.ttft_s = _ewma(self.ttft_s, seconds)

    def add_tokens(self, tokens: int) -> None:
        if self.deployment.tpm is not None and tokens > 0:
            self.tpm.add(self.clock.now(), tokens)

    def error_rate(self, now: float) -> tuple[int, int]:
        """(calls, failures) in the breaker window: across replicas when shared, else local."""
        if self.shared_window is not None:
            return self.shared_window
        return self.breaker.window.totals(now)


def _ewma(old: float | None, sample: float) -> float:
    return sample if old is None else old + EWMA_ALPHA * (sample - old)
