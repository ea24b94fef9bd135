"""What is retried, what the breaker counts, how long the backoff is, how routing rules combine."""

from __future__ import annotations

import random

import pytest

from aigw import errors
from aigw.config.models import ModelRouting
from aigw.routing.retry import backoff_s, dead_deployment, moves_on, outcome_of, resolve_policies, retryable


@pytest.mark.parametrize(
    ("err", "retry", "failure", "answered"),
    [
        (errors.RateLimited("x", retry_after=2), True, False, False),
        (errors.UpstreamTimeout("x"), True, True, False),
        (errors.Unavailable("x"), True, True, False),
        (errors.UpstreamError("x"), True, True, False),
        (errors.AuthError("x", status=502, code="upstream_auth"), False, True, False),
        (errors.QuotaExceeded("x", code="insufficient_quota"), False, True, False),
        (errors.UpstreamModelNotFound("x", code="upstream_model_not_found"), False, True, False),
        (errors.InvalidRequest("x"), False, False, True),
        (errors.ContextLengthExceeded("x"), False, False, True),
        (errors.ContentPolicy("x"), False, False, True),
        (errors.NotFound("x"), False, False, True),
    ],
)
def test_classification(err: errors.GatewayError, retry: bool, failure: bool, answered: bool) -> None:
    assert retryable(err) is retry
    o = outcome_of(err)
    assert (o.failure, o.ok) == (failure, answered)


def test_out_of_quota_moves_on_but_never_back_to_the_same_deployment() -> None:
    quota = errors.QuotaExceeded("x", code="insufficient_quota")
    assert moves_on(quota) and dead_deployment(quota) and not retryable(quota)
    assert moves_on(errors.Unavailable("x")) and not dead_deployment(errors.Unavailable("x"))
    assert not moves_on(errors.InvalidRequest("x")) and not moves_on(errors.NotFound("x"))


def test_an_upstream_refusing_our_key_moves_on_but_never_back_to_the_same_deployment() -> None:
    auth = errors.AuthError("x", status=502, code="upstream_auth")
    assert moves_on(auth) and dead_deployment(auth) and not retryable(auth)


def test_an_upstream_without_the_deployments_model_moves_on_but_never_back_to_the_same_deployment() -> None:
    gone = errors.UpstreamModelNotFound("x", code="upstream_model_not_found")
    assert moves_on(gone) and dead_deployment(gone) and not retryable(gone)


def test_rate_limited_outcome_keeps_retry_after() -> None:
    assert outcome_of(errors.RateLimited("x", retry_after=3.5)).retry_after == 3.5


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = ModelRouting(backoff_s=0.1, backoff_max_s=0.5)
    rng = random.Random(3)
    assert backoff_s(0, policy, rng) == 0
    for retry, (low, high) in {1: (0.05, 0.1), 2: (0.1, 0.2), 3: (0.2, 0.4), 6: (0.25, 0.5)}.items():
        draws = [backoff_s(retry, policy, rng) for _ in range(500)]
        assert low <= min(draws) and max(draws) <= high
        assert max(draws) - min(draws) > (high - low) / 2  # jittered, not fixed


def test_star_rules_are_defaults_a_model_overrides_field_by_field() -> None:
    rules = {"*": ModelRouting(num_retries=5, strategy="least_inflight"),
             "fast": ModelRouting.model_validate({"num_retries": 1, "fallbacks": ["slow"]})}
    got = resolve_policies(rules, ["fast", "slow"])
    assert (got["fast"].num_retries, got["fast"].strategy, got["fast"].fallbacks) == (1, "least_inflight", ["slow"])
    assert (got["slow"].num_retries, got["slow"].strategy) == (5, "least_inflight")


def test_no_rules_means_the_defaults() -> None:
    got = resolve_policies({}, ["m"])
    assert got["m"] == ModelRouting()
    assert (got["m"].strategy, got["m"].num_retries) == ("weighted", 2)
