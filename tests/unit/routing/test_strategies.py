"""Each strategy keeps the promise it makes, over thousands of draws."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from aigw.routing import strategies

DRAWS = 4000


@dataclass
class Cand:
    weight: float = 1.0
    inflight: int = 0
    latency_s: float | None = None
    ttft_s: float | None = None
    cost: float | None = None
    left: float = 1.0

    def remaining(self) -> float:
        return self.left


def shares(pick: strategies.Pick, cands: list[Cand], stream: bool = False, buffer: float = 0.1) -> list[float]:
    rng = random.Random(1234)
    counts = Counter(pick(cands, rng, stream, buffer) for _ in range(DRAWS))
    return [counts[i] / DRAWS for i in range(len(cands))]


def test_weighted_picks_in_proportion_to_weight() -> None:
    got = shares(strategies.weighted, [Cand(weight=3), Cand(weight=1), Cand(weight=1)])
    assert got == pytest.approx([0.6, 0.2, 0.2], abs=0.03)


def test_weighted_with_equal_weights_is_uniform() -> None:
    got = shares(strategies.weighted, [Cand(), Cand(), Cand(), Cand()])
    assert got == pytest.approx([0.25] * 4, abs=0.03)


def test_least_inflight_always_takes_the_least_busy_and_shares_ties() -> None:
    got = shares(strategies.least_inflight, [Cand(inflight=3), Cand(inflight=1), Cand(inflight=1), Cand(inflight=5)])
    assert got[0] == got[3] == 0
    assert got[1] == pytest.approx(0.5, abs=0.03)


def test_least_inflight_ties_follow_weight() -> None:
    got = shares(strategies.least_inflight, [Cand(inflight=2, weight=3), Cand(inflight=2, weight=1)])
    assert got == pytest.approx([0.75, 0.25], abs=0.03)


def test_least_inflight_balances_a_live_load() -> None:
    """Simulated: calls arrive, each takes a few ticks; in-flight counts stay within one of each other."""
    rng = random.Random(5)
    cands = [Cand(), Cand(), Cand()]
    running: list[tuple[int, int]] = []  # (ends_at, index)
    spread = 0
    for tick in range(DRAWS):
        for ends, i in [r for r in running if r[0] <= tick]:
            running.remove((ends, i))
            cands[i].inflight -= 1
        i = strategies.least_inflight(cands, rng)
        cands[i].inflight += 1
        running.append((tick + 5, i))
        counts = [c.inflight for c in cands]
        spread = max(spread, max(counts) - min(counts))
    assert spread <= 1


def test_lowest_latency_shares_load_within_the_buffer_and_never_picks_the_slow_one() -> None:
    got = shares(strategies.lowest_latency, [Cand(latency_s=0.100), Cand(latency_s=0.105), Cand(latency_s=0.300)])
    assert got[2] == 0
    assert got[0] == pytest.approx(0.5, abs=0.03)


def test_lowest_latency_with_no_buffer_picks_only_the_fastest() -> None:
    got = shares(strategies.lowest_latency, [Cand(latency_s=0.1), Cand(latency_s=0.105)], buffer=0.0)
    assert got == [1.0, 0.0]


def test_lowest_latency_uses_time_to_first_token_for_streams() -> None:
    cands = [Cand(latency_s=0.1, ttft_s=0.9), Cand(latency_s=0.9, ttft_s=0.1)]
    assert shares(strategies.lowest_latency, cands, stream=False) == [1.0, 0.0]
    assert shares(strategies.lowest_latency, cands, stream=True) == [0.0, 1.0]


def test_lowest_latency_measures_a_newcomer_first() -> None:
    got = shares(strategies.lowest_latency, [Cand(latency_s=0.05), Cand(latency_s=None)])
    assert got == [0.0, 1.0]


def test_lowest_cost_picks_the_cheapest_and_unknown_prices_last() -> None:
    got = shares(strategies.lowest_cost, [Cand(cost=2.0), Cand(cost=0.5), Cand(cost=0.5), Cand(cost=None)])
    assert got[0] == got[3] == 0
    assert got[1] == pytest.approx(0.5, abs=0.03)


def test_lowest_cost_with_no_prices_falls_back_to_weights() -> None:
    got = shares(strategies.lowest_cost, [Cand(weight=1), Cand(weight=3)])
    assert got == pytest.approx([0.25, 0.75], abs=0.03)


def test_most_quota_picks_the_most_remaining() -> None:
    got = shares(strategies.most_quota, [Cand(left=0.2), Cand(left=0.9), Cand(left=0.5)])
    assert got == [0.0, 1.0, 0.0]


def test_every_configured_strategy_is_registered() -> None:
    from typing import get_args

    from aigw.config.models import RoutingStrategy

    assert set(get_args(RoutingStrategy)) == set(strategies.STRATEGIES)
