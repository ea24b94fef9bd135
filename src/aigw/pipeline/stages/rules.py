"""Deterministic rules: answer, route or reject a chat request without asking a model.

Rules (``guardrails.rules``, first match wins; see ``guardrails/rules.py``) see
the request before PII redaction, so a regex can match what the user typed. An
answer costs nothing: ``ctx.handled_by = "rules"`` (header ``x-aigw-handled-by``,
the ledger's ``handled_by``, the metrics' provider label), zero usage, and it
goes back in the client's wire format, streamed when the client asked for a
stream (replayed with the cache's chunk builder, so both look like a live
answer). A route changes the model before the router sees it; later stages
then use the new model's policy, and its input checks (``validate``: a max_tokens ceiling, sizes) run
again for it; a key whose models exclude the target gets a
403. A reject is a 400 with the rule's text.
"""

from __future__ import annotations

from typing import Any

from aigw.errors import GuardrailBlocked, PermissionDenied
from aigw.guardrails.rules import RuleOutcome
from aigw.observability.metrics import Metrics
from aigw.pipeline.context import Completed, RequestContext, Result, Streaming
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.stage import Stage
from aigw.pipeline.stages.cache_stream import replay
from aigw.pipeline.stages.guardrail_policy import Policies, metrics_of, policies_for, record
from aigw.pipeline.stages.validate import AGAIN
from aigw.schema.replay import replay_chunks
from aigw.types import JSON, Clock

HANDLED_BY = "rules"
RULE_HEADER = "x-aigw-rule"


def _entry(outcome: RuleOutcome | None) -> dict[str, Any]:
    """The request log's record: the action and the rule's (configured) name, never the user's text."""
    if outcome is None:
        return {"action": "pass", "reasons": [], "counts": {}, "score": 0.0}
    entry: dict[str, Any] = {"action": outcome.action, "reasons": [f"rule:{outcome.rule}"], "counts": {},
                             "score": 1.0}
    if outcome.model:
        entry["model"] = outcome.model
    return entry


def answer_body(ctx: RequestContext, text: str, created: int) -> JSON:
    """A canonical chat.completion with the rule's text, one choice per ``n``, zero usage."""
    n = ctx.body.get("n")
    count = n if isinstance(n, int) and n > 0 else 1
    message = {"role": "assistant", "content": text, "refusal": None}
    return {
        "id": f"chatcmpl-rules-{ctx.request_id}", "object": "chat.completion", "created": created,
        "model": ctx.model,
        "choices": [{"index": i, "message": dict(message), "logprobs": None, "finish_reason": "stop"}
                    for i in range(count)],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


class RulesStage(Stage):
    name = "rules"

    def __init__(self, policies: Policies, clock: Clock, metrics: Metrics | None = None,
                 services: dict[str, Any] | None = None) -> None:
        self.policies = policies
        self.clock = clock
        self.metrics = metrics
        self._services = services if services is not None else {}  # read when a rule routes: ``validate.AGAIN``

    async def on_request(self, ctx: RequestContext) -> Result | None:
        if ctx.endpoint != "chat":
            return None
        rules = self.policies.for_request(ctx).rules
        if rules is None:
            return None
        outcome = rules.evaluate(ctx.model, ctx.principal.key_id or None, ctx.body.get("messages") or [])
        record(ctx, self.name, _entry(outcome), outcome.action if outcome else "pass", self.metrics)
        if outcome is None:
            return None
        ctx.response_headers[RULE_HEADER] = outcome.rule
        if outcome.action == "reject":
            raise GuardrailBlocked(outcome.text or "This request is not allowed.", code="rule_rejected")
        if outcome.action == "route" and outcome.model:
            allowed = ctx.principal.allowed_models  # a key's models bind where a rule sends its data too
            if allowed is not None and outcome.model not in allowed:
                raise PermissionDenied(f"This key may not use model `{outcome.model}`, where a rule routes "
                                       "this request.", param="model")
            ctx.model = outcome.model
            ctx.body = {**ctx.body, "model": outcome.model}
            self.policies.forget(ctx)
            again = self._services.get(AGAIN)
            if again is not None:  # the routed model's own input checks (its ceiling, sizes) hold too
                again(ctx, True)
            return None
        ctx.handled_by = HANDLED_BY
        ctx.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        body = answer_body(ctx, outcome.text or "", int(self.clock.now()))
        if ctx.stream:
            return Streaming(replay(replay_chunks(body)))
        return Completed(body)


def build(deps: StageDeps) -> Stage | None:
    policies = policies_for(deps, "rules")
    if policies is None:
        return None
    return RulesStage(policies, deps.clock, metrics_of(deps), deps.services)
