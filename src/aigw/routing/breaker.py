"""One deployment's circuit breaker, as a small pure state machine.

    closed --(N failures in window_s, or error_ratio of >= min_calls)--> open
    open --(cooldown_s passes)--> half-open: up to half_open_calls trial calls
    half-open --(a trial succeeds)--> closed      --(a trial fails)--> open again

No clock and no I/O here: every method takes ``now`` (monotonic seconds), so the
router, the shared Redis state and the tests drive the same code. ``gen`` counts
transitions that came from the shared state, so a replica adopts a newer shared
verdict and ignores an older one.
"""

from __future__ import annotations

from aigw.config.models import CircuitBreakerConfig

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
BUCKETS = 10  # the window is kept as this many buckets; old ones fall off as time passes


class Window:
    """Calls and failures over the last ``window_s`` seconds, in ``BUCKETS`` buckets."""

    __slots__ = ("_bucket_s", "_calls", "_fails", "_stamp")

    def __init__(self, window_s: float) -> None:
        self._bucket_s = window_s / BUCKETS
        self._calls = [0] * BUCKETS
        self._fails = [0] * BUCKETS
        self._stamp = [-1] * BUCKETS

    def add(self, now: float, calls: int, fails: int) -> None:
        b = int(now // self._bucket_s)
        i = b % BUCKETS
        if self._stamp[i] != b:
            self._stamp[i], self._calls[i], self._fails[i] = b, 0, 0
        self._calls[i] += calls
        self._fails[i] += fails

    def totals(self, now: float) -> tuple[int, int]:
        oldest = int(now // self._bucket_s) - BUCKETS
        calls = fails = 0
        for i in range(BUCKETS):
            if self._stamp[i] > oldest:
                calls += self._calls[i]
                fails += self._fails[i]
        return calls, fails

    def clear(self) -> None:
        self._stamp = [-1] * BUCKETS


class Breaker:
    __slots__ = ("cfg", "gen", "lease_until", "state", "trials", "until", "window")

    def __init__(self, cfg: CircuitBreakerConfig) -> None:
        self.cfg = cfg
        self.state = CLOSED  # CLOSED or OPEN; half-open is OPEN with the cooldown over
        self.until = 0.0  # when an open breaker turns half-open
        self.trials = 0  # trial calls running while half-open
        self.lease_until = 0.0  # past this, the trials running hold their permits no longer (as Redis's lease)
        self.gen = 0  # last shared generation adopted
        self.window = Window(cfg.window_s)

    def phase(self, now: float) -> str:
        if self.state == CLOSED or not self.cfg.enabled:
            return CLOSED
        return HALF_OPEN if now >= self.until else OPEN

    def try_trial(self, now: float) -> bool:
        """Take one of the half-open trial permits (this replica's count). Permits last a cooldown, as the
        shared ones' Redis lease does: a trial that hangs (an upstream that takes the call and never answers,
        for the deployment's whole timeout) must not keep every other request off the deployment meanwhile."""
        if self.phase(now) != HALF_OPEN:
            return False
        if self.trials >= self.cfg.half_open_calls:
            if now < self.lease_until:
                return False
            self.trials = 0  # the trials running outlived their permits: their ends are still recorded
        self.trials += 1
        self.lease_until = now + self.cfg.cooldown_s
        return True

    def release_trial(self) -> None:
        self.trials = max(0, self.trials - 1)

    def success(self, now: float, trial: bool) -> bool:
        """Record a good call; True if it closed the breaker."""
        if trial:
            self.release_trial()
            if self.state == OPEN:
                self.close()
                return True
            return False
        if self.state == CLOSED:
            self.window.add(now, 1, 0)
        return False

    def failure(self, now: float, trial: bool) -> bool:
        """Record a failed call; True if it opened (or re-opened) the breaker."""
        if trial:
            self.release_trial()
            if self.state == OPEN:
                self.trip(now)
                return True
        if self.state != CLOSED:
            return False
        self.window.add(now, 1, 1)
        if self.should_open(now):
            self.trip(now)
            return True
        return False

    def should_open(self, now: float) -> bool:
        if not self.cfg.enabled:
            return False
        calls, fails = self.window.totals(now)
        if fails >= self.cfg.failures:
            return True
        ratio = self.cfg.error_ratio
        return ratio is not None and calls >= self.cfg.min_calls and fails >= ratio * calls

    def trip(self, now: float) -> None:
        self.state, self.until, self.trials = OPEN, now + self.cfg.cooldown_s, 0
        self.window.clear()

    def close(self) -> None:
        self.state, self.until, self.trials = CLOSED, 0.0, 0
        self.window.clear()

    def end_cooldown(self, now: float) -> None:
        """A successful active probe: let trial calls through now instead of after the cooldown."""
        if self.state == OPEN and self.until > now:
            self.until = now

    def adopt(self, state: str, until: float, gen: int) -> bool:
        """Take the shared verdict if it is newer than the last one seen; True if taken."""
        if gen <= self.gen:
            return False
        self.gen = gen
        if state == OPEN:
            if self.state != OPEN:
                self.window.clear()
            self.state, self.until = OPEN, until
        elif self.state != CLOSED:
            self.close()
        self.trials = 0
        return True
