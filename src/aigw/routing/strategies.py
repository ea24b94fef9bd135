"""Pure load-balancing strategies: which of a model's usable deployments takes the next attempt.

Each takes the candidates (anything with the ``Candidate`` attributes) and an RNG and
returns the index of its pick. No clock, no I/O, so their promises are tested on
thousands of draws. Ties are broken by weight, so equal deployments share the load.

    weighted        P(pick i) = weight_i / sum(weights)
    least_inflight  the fewest calls in flight (all replicas when Redis is shared)
    lowest_latency  the lowest latency EWMA (time to first token for streams); all within
                    ``buffer`` (10%) of the fastest share the load; unmeasured ones go first
    lowest_cost     the cheapest (USD per Mtok, input + output); unknown prices go last
    most_quota      the largest share of its own rpm/tpm caps left (uncapped = all of it)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Protocol


class Candidate(Protocol):
    @property
    def weight(self) -> float: ...

    @property
    def inflight(self) -> int: ...

    @property
    def latency_s(self) -> float | None: ...

    @property
    def ttft_s(self) -> float | None: ...

    @property
    def cost(self) -> float | None: ...

    def remaining(self) -> float: ...


Pick = Callable[[Sequence[Candidate], random.Random, bool, float], int]


def weighted(cands: Sequence[Candidate], rng: random.Random, stream: bool = False, buffer: float = 0.0) -> int:
    total = 0.0
    for c in cands:
        total += c.weight
    r = rng.random() * total
    for i, c in enumerate(cands):
        r -= c.weight
        if r < 0:
            return i
    return len(cands) - 1


def _lowest(cands: Sequence[Candidate], rng: random.Random, key: Sequence[float]) -> int:
    """The index with the smallest key; ties shared by weight."""
    best = min(key)
    tied = [i for i, k in enumerate(key) if k <= best]
    if len(tied) == 1:
        return tied[0]
    return tied[weighted([cands[i] for i in tied], rng)]


def least_inflight(cands: Sequence[Candidate], rng: random.Random, stream: bool = False,
                   buffer: float = 0.0) -> int:
    return _lowest(cands, rng, [float(c.inflight) for c in cands])


def lowest_latency(cands: Sequence[Candidate], rng: random.Random, stream: bool = False,
                   buffer: float = 0.1) -> int:
    measured = [_latency(c, stream) for c in cands]
    if any(m is None for m in measured):  # measure a newcomer before judging it
        return _lowest(cands, rng, [0.0 if m is None else 1.0 for m in measured])
    values = [m for m in measured if m is not None]
    limit = min(values) * (1.0 + buffer)
    return _lowest(cands, rng, [0.0 if v <= limit else v for v in values])


def _latency(c: Candidate, stream: bool) -> float | None:
    first, second = (c.ttft_s, c.latency_s) if stream else (c.latency_s, c.ttft_s)
    return first if first is not None else second


def lowest_cost(cands: Sequence[Candidate], rng: random.Random, stream: bool = False, buffer: float = 0.0) -> int:
    return _lowest(cands, rng, [math.inf if c.cost is None else c.cost for c in cands])


def most_quota(cands: Sequence[Candidate], rng: random.Random, stream: bool = False, buffer: float = 0.0) -> int:
    return _lowest(cands, rng, [-c.remaining() for c in cands])


STRATEGIES: dict[str, Pick] = {
    "weighted": weighted,
    "least_inflight": least_inflight,
    "lowest_latency": lowest_latency,
    "lowest_cost": lowest_cost,
    "most_quota": most_quota,
}
