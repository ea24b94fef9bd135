"""Which models a request for one model may end up served by: the targets of routing rules and fallback
chains. The budget reserves at the dearest of them, since the reservation is made before either acts."""

from __future__ import annotations

from aigw.guardrails.rules import RuleSet
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.stages.guardrail_policy import policies_for


def rule_targets(deps: StageDeps, model: str) -> set[str]:
    """The models a configured rule (global, or the model's own) may route ``model``'s requests to."""
    policies = policies_for(deps, "rules")
    rules = policies.by_model.get(model, policies.default).rules if policies is not None else None
    return route_targets(rules, model) if rules is not None else set()


def fallback_targets(deps: StageDeps, model: str) -> set[str]:
    """The models ``model``'s fallback chains may serve it with (the chain is flat: a fallback's own
    fallbacks are not followed)."""
    if deps.router is None:
        return set()
    policy = deps.router.policy(model)
    return {*policy.fallbacks, *policy.context_window_fallbacks, *policy.content_policy_fallbacks}


def with_fallbacks(targets: set[str], reach: dict[str, set[str]], deps: StageDeps) -> set[str]:
    """``targets`` and the models their fallback chains may reach (a routed request is served through the
    router under its new model's policy)."""
    out = set(targets)
    for target in targets:
        out |= reach[target] if target in reach else fallback_targets(deps, target)
    return out


def route_targets(rules: RuleSet, model: str) -> set[str]:
    """The models ``rules`` may route ``model``'s requests to."""
    return {r.text for r in rules.rules if r.action == "route" and (r.model is None or r.model.fullmatch(model))}
