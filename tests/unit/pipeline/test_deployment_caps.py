"""A deployment's own caps as the router checks them (``pipeline.deployment_caps``): here, a prompt too large for
every capped deployment, and the figures its 429 carries."""

from __future__ import annotations

import math
from typing import Any

import pytest

from aigw.pipeline.deployment_caps import DeploymentCaps
from aigw.stores.base import Limits, Scope
from aigw.stores.memory import MemoryGate, MemoryRateLimiter
from aigw.stores.memory_budgets import MemoryBudgets
from tests.unit.pipeline.test_tenancy_stages import _services

LONG = {"model": "narrow", "messages": [{"role": "user", "content": "word " * 2000}]}


class _PeekDown(MemoryGate):
    async def peek(self, rate: list[Scope]) -> list[Any]:
        raise ConnectionError("store down")


def _caps(gate: Any = None) -> DeploymentCaps:
    lists = {d: [Scope("deployment", d, Limits(tpm=tpm))] for d, tpm in (("small", 400), ("large", 800))}
    return DeploymentCaps(_services(gate=gate), lists, "slot_1", est=5000, body=LONG, now=lambda: 1000.0)


@pytest.mark.parametrize("peek_down", [False, True])
async def test_a_prompt_over_every_cap_carries_the_largest_caps_token_figures(peek_down: bool) -> None:
    caps = _caps(_PeekDown(MemoryRateLimiter(), MemoryBudgets()) if peek_down else None)
    assert await caps.admit("large") == math.inf and await caps.admit("small") == math.inf
    assert caps.taken == []  # nothing was taken from either
    headers: dict[str, str] = {"x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": "4"}
    await caps.too_large_headers(headers)
    assert headers["x-ratelimit-limit-tokens"] == "800"
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("5", "4")
    if peek_down:  # the limit alone, and the failed read counted
        assert "x-ratelimit-remaining-tokens" not in headers and caps.svc.counters == {"limits": 1}
    else:  # the whole window left: nothing has used it
        assert (headers["x-ratelimit-remaining-tokens"], headers["x-ratelimit-reset-tokens"]) == ("800", "0s")


async def test_a_side_calls_takes_settle_to_the_answer_and_to_cut_prompts() -> None:
    from aigw.pipeline.deployment_caps import settle_side_call

    limiter = MemoryRateLimiter()
    gate = MemoryGate(limiter, MemoryBudgets())
    vec = [Scope("deployment", "vec", Limits(tpm=1000))]
    caps = DeploymentCaps(_services(gate=gate), {"vec": vec}, "slot_e", est=300, body={"input": ["x"]},
                          now=limiter.now)
    assert await caps.admit("vec") is None and await caps.admit("vec") is None  # a cut try, then the answer
    assert (await gate.peek(vec))[0].remaining_tokens == 400
    await settle_side_call(caps, answered=("vec", 12), cut=[("vec", 9)])
    assert (await gate.peek(vec))[0].remaining_tokens == 1000 - 12 - 9
    failed = DeploymentCaps(caps.svc, {"vec": vec}, "slot_f", est=300, body={"input": ["x"]}, now=limiter.now)
    assert await failed.admit("vec") is None
    await settle_side_call(failed, answered=None, cut=[])  # failed before its upstream took it: all back
    assert (await gate.peek(vec))[0].remaining_tokens == 1000 - 12 - 9


async def test_a_prompt_that_fits_what_a_deployment_has_left_is_not_skipped_on_the_estimate_alone() -> None:
    # the estimate errs high: a deployment with 70 tokens left was skipped (and, alone, a 429 "every deployment
    # is at its rate limit") for a prompt of ~55 tokens estimated at ~87
    limiter = MemoryRateLimiter()
    gate = MemoryGate(limiter, MemoryBudgets())
    dep = [Scope("deployment", "left", Limits(tpm=150))]
    assert limiter.take(dep, "earlier", 80, limiter.now()).allowed
    body = {"model": "m", "messages": [{"role": "user", "content": "the quick brown fox " * 12}]}
    svc = _services(gate=gate)
    counted = svc.tokens.count_prompt(body)
    assert counted <= 70
    caps = DeploymentCaps(svc, {"left": dep}, "slot_l", est=87, body=body, now=limiter.now)
    assert await caps.admit("left") is None
    assert caps.taken[0].est == caps.counted == counted
    again = DeploymentCaps(svc, {"left": dep}, "slot_m", est=87, body=body, now=limiter.now)
    wait = await again.admit("left")  # counted, it does not fit now: a wait, not "too large"
    assert wait is not None and 1 <= wait < math.inf and again.taken == []
