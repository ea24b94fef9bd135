"""The one retry policy: which failures are retried, how long to wait, what the breaker counts.

    kind                       retried   breaker failure   fallback chain
    rate_limited               yes       no (the deployment cools for its Retry-After)   fallbacks
    timeout, unavailable,
    upstream_error             yes       yes               fallbacks
    quota_exceeded             elsewhere yes               other deployments, then fallbacks
    auth (upstream key)        elsewhere yes               other deployments, then fallbacks
    upstream_model_not_found   elsewhere yes               other deployments, then fallbacks
    context_length_exceeded    no        no                context_window_fallbacks
    content_policy             no        no                content_policy_fallbacks
    unfit (adapter's 400       never     nothing           other deployments, then fallbacks
      before any upstream call)
    anything else              no        no                -

A 4xx about the request itself means the deployment answered, so for its breaker
it is a success. A 400 its adapter raised before calling the upstream (``unfit``:
an Anthropic client's PDF by URL on an OpenAI-style deployment, an OpenAI file_id
on an Anthropic one) says nothing of the upstream: no call, no attempt, no retry
budget, nothing for the breaker; the client gets it only when no deployment of the
chain can take the request.
"""

from __future__ import annotations

import random

from aigw import errors
from aigw.config.models import ModelRouting
from aigw.routing.state import Outcome

RETRYABLE = frozenset({"rate_limited", "timeout", "unavailable", "upstream_error"})
# The deployment cannot serve (no quota left, the upstream refuses our key for it: a revoked or rotated
# key, a region or model the account may not use; or the upstream says its model or deployment does not
# exist): never called again in this request, but its sibling deployments (their own keys, upstreams and
# model names) and the fallback chain may still answer.
DEPLOYMENT_DEAD = frozenset({"quota_exceeded", "auth", "upstream_model_not_found"})
_SICK = frozenset({"timeout", "unavailable", "upstream_error"})
DEFAULT_COOL_S = 1.0  # a 429 without Retry-After cools its deployment this long


def outcome_of(err: errors.GatewayError) -> Outcome:
    kind = err.kind
    if kind in _SICK:
        return Outcome(ok=False, failure=True, kind=kind)
    if kind == "rate_limited":
        return Outcome(ok=False, failure=False, kind=kind, retry_after=err.retry_after)
    if kind in DEPLOYMENT_DEAD:  # the upstream account or model (our caller's key was checked)
        return Outcome(ok=False, failure=True, kind=kind)
    return Outcome(ok=True, failure=False, kind=kind)


def unfit(err: errors.GatewayError, sent: bool) -> bool:
    """The deployment's adapter refused the request before any upstream call (``sent``: the request was
    written to its upstream): a 400 about what this deployment's provider cannot take; marks ``err``."""
    if err.kind == "bad_request" and not sent and not err.reached_upstream:
        err.unfit = True
    return err.unfit


def retryable(err: errors.GatewayError) -> bool:
    """The same deployment may be called again for this request."""
    return err.kind in RETRYABLE


def moves_on(err: errors.GatewayError) -> bool:
    """Another attempt is worth making: a retry, another deployment or the fallback chain."""
    return err.kind in RETRYABLE or err.kind in DEPLOYMENT_DEAD or err.unfit


def dead_deployment(err: errors.GatewayError) -> bool:
    """The deployment that raised this is not to be called again in this request."""
    return err.kind in DEPLOYMENT_DEAD or err.unfit


def backoff_s(retry: int, policy: ModelRouting, rng: random.Random) -> float:
    """Exponential backoff with equal jitter: half fixed, half random, capped."""
    if retry <= 0 or policy.backoff_s <= 0:
        return 0.0
    ceiling = min(policy.backoff_max_s, policy.backoff_s * 2.0 ** (retry - 1))
    return ceiling / 2 + rng.random() * ceiling / 2


def resolve_policies(rules: dict[str, ModelRouting], models: list[str]) -> dict[str, ModelRouting]:
    """Each model's routing rules, with unset fields taken from the ``"*"`` entry."""
    default = rules.get("*", ModelRouting())
    out: dict[str, ModelRouting] = {}
    for name in models:
        rule = rules.get(name)
        if rule is None:
            out[name] = default
        else:
            out[name] = default.model_copy(update={k: getattr(rule, k) for k in rule.model_fields_set})
    return out
