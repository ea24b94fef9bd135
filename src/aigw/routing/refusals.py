"""The router's own refusal when no deployment of a model can be called now (``Router._choose``): a 429 with
the wait the client should make, or a 503 while breakers are open."""

from __future__ import annotations

import math

from aigw import errors
from aigw.routing.attempts import Slot


def none_left(named: str, now: float, reopen: float, capped: bool, cooling: Slot | None,
               wall: float, full_wait: float | None = None) -> errors.GatewayError:
    """The refusal when no deployment of the model can be called now, with the wait the client should make.

    A wait that is known (an upstream's Retry-After, the exact caps, a breaker's cooldown) is sent as it is:
    ``retry-after-ms`` carries it to the millisecond, so a client sleeps 0.2 s, not 1 s, for a 0.2 s wait.
    Only this replica's own guesses keep a 1 s floor: with replicas sharing their counts, the total it
    adopted at its last sync does not roll over with the minute but at its next sync (``sync_interval_s``,
    0.5 s by default), so a client sent back 50 ms before the minute's end would be refused again; and a
    half-open trial in flight says nothing of when it ends."""
    if capped or cooling is not None:
        if cooling is not None:  # the sooner of the cooling deployment and one at its exact caps
            wait = cooling.state.cool_until - now
            if full_wait is not None:
                wait = min(wait, full_wait)
        elif full_wait == math.inf:  # the prompt alone is over every capped deployment's tpm: no wait helps
            return errors.TooLargeForLimit(f"Request too large for the deployments of {named} on tokens per "
                                           "minute: the prompt alone is over their caps. Shorten it to run it.",
                                           code="rate_limit_exceeded")
        elif full_wait is not None:  # the exact caps say when
            wait = full_wait
        else:  # this replica's estimate: when its minute rolls over, if its next sync agrees
            wait = max(1.0, 60.0 - wall % 60.0)
        kind = errors.DeploymentsFull if full_wait is not None else errors.RateLimited
        return kind(f"Every deployment of {named} is at its rate limit; retry later.", retry_after=max(0.0, wait))
    return errors.Unavailable(f"Every deployment of {named} is unavailable (circuit open); retry later.",
                              retry_after=reopens_in(reopen, now))


def reopens_in(reopen: float, now: float) -> float:
    """Seconds until an open breaker lets a trial through: its cooldown's end as it is, known to the
    millisecond; 1 s when only a half-open trial in flight is in the way (or nothing says when)."""
    return max(0.0, reopen - now) if reopen < math.inf else 1.0
