"""Prompt-injection checks: score the user and tool-result text (a legacy completion's prompt and
suffix); flag or block above a threshold.

The heuristic scorer (``guardrails/injection.py``) runs inline: tens of
microseconds for a 2 KB prompt. A deployment may register model-based
classifiers (``deps.services["injection_classifiers"]``: name -> an
``InjectionClassifier``) and pick one per policy with ``injection.classifier``;
a model is slow and blocking, so the whole check then runs in a worker thread.
``flag`` only records the verdict; ``block`` is a 400 naming the signal kinds.
The stage runs after PII redaction, so it scores what would go upstream.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from aigw.errors import GuardrailBlocked
from aigw.guardrails.injection import check_injection
from aigw.observability.metrics import Metrics
from aigw.pipeline.context import RequestContext, Result
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.stage import Stage
from aigw.pipeline.stages.guardrail_policy import Policies, as_messages, metrics_of, policies_for, record


class InjectionStage(Stage):
    name = "injection"

    def __init__(self, policies: Policies, metrics: Metrics | None = None) -> None:
        self.policies = policies
        self.metrics = metrics

    async def on_request(self, ctx: RequestContext) -> Result | None:
        policy = self.policies.for_request(ctx)
        inj = policy.injection
        if inj is None or ctx.endpoint == "embeddings":
            return None
        messages = as_messages(ctx)
        if ctx.endpoint == "completions" and isinstance(suffix := ctx.body.get("suffix"), str) and suffix:
            messages = [*(messages or ()), {"role": "user", "content": suffix}]  # sent upstream beside the prompt
        if not messages:
            return None
        mode: Literal["flag", "block"] = "block" if inj.mode == "block" else "flag"
        if policy.classifier is None:
            verdict = check_injection(messages, inj.threshold, mode=mode)
        else:
            verdict = await asyncio.to_thread(check_injection, messages, inj.threshold, mode=mode,
                                              classifier=policy.classifier)
        record(ctx, self.name, verdict.to_record(), verdict.action, self.metrics)
        if verdict.blocked:
            kinds = ", ".join(r.removeprefix("injection:") for r in verdict.reasons) or "score"
            raise GuardrailBlocked(f"Blocked by the prompt-injection guardrail ({kinds}; score "
                                   f"{verdict.score:.2f} >= {inj.threshold:g}).", code="prompt_injection")
        return None


def build(deps: StageDeps) -> Stage | None:
    policies = policies_for(deps, "injection")
    if policies is None:
        return None
    return InjectionStage(policies, metrics_of(deps))
