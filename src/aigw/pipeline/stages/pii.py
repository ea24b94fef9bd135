"""PII and secrets: flag, redact (and restore in the answer) or block, per policy.

Every text of the request is scanned: message content and text parts (system,
user, assistant, tool results), tool-call arguments, a predicted output's content,
and a legacy prompt (and suffix) or an embeddings input. ``redact`` sends typed placeholders (``<EMAIL_1>``) upstream
in a copy of the body (the client's body is never changed in place) and keeps
the placeholder -> original mapping on the request only; on the way back the
placeholders are put back, in plain and streamed answers, even when one is
split across chunks. Inside tool-call arguments, and in answers to JSON-format
requests, the originals are inserted JSON-escaped so the JSON stays valid; a custom
tool call's ``input`` is free text and gets them back as they were.
``block`` is a 400 naming the kinds found, never the values.

Post-hooks run in reverse order, so the output checks and the cache see the
answer before the originals are restored: neither ever holds a raw value.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import orjson

from aigw.errors import GuardrailBlocked
from aigw.guardrails.pii import StreamRestorer, apply_pii_policy, restore
from aigw.observability.metrics import Metrics
from aigw.pipeline.context import RequestContext, Result
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.stage import Stage
from aigw.pipeline.stages.guardrail_policy import (
    PII_DETECTOR,
    PII_MAPPING,
    PII_RESTORE,
    Policies,
    as_messages,
    metrics_of,
    policies_for,
    record,
    with_texts,
)
from aigw.pipeline.stages.guardrail_stream import Slot, StreamEditor, TextFilter, TextKind, edit_stream
from aigw.schema.openai import call_kind, call_text, with_call_text
from aigw.types import JSON

_JSON_FORMATS = frozenset({"json_object", "json_schema"})


def _escaped(mapping: Mapping[str, str]) -> dict[str, str]:
    """Originals as they must appear inside a JSON string."""
    return {k: orjson.dumps(v).decode()[1:-1] for k, v in mapping.items()}


def _json_answer(ctx: RequestContext) -> bool:
    fmt = ctx.body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in _JSON_FORMATS


class PiiStage(Stage):
    name = "pii"

    def __init__(self, policies: Policies, metrics: Metrics | None = None) -> None:
        self.policies = policies
        self.metrics = metrics

    async def on_request(self, ctx: RequestContext) -> Result | None:
        policy = self.policies.for_request(ctx)
        pii, detector = policy.pii, policy.detector
        if pii is None or detector is None:
            return None
        ctx.state[PII_DETECTOR] = detector  # the request log's bodies are redacted with it too (its custom kinds)
        messages = as_messages(ctx)
        if not messages:
            return None
        side = _side_texts(ctx.body, ctx.endpoint)
        redacted, verdict, mapping = apply_pii_policy([*messages, *side.values()], pii.mode, detector)
        record(ctx, self.name, verdict.to_record(), verdict.action, self.metrics)
        if verdict.blocked:
            kinds = ", ".join(r.removeprefix("pii:") for r in verdict.reasons)
            raise GuardrailBlocked(f"Blocked by the PII guardrail: the request contains {kinds}. "
                                   "Nothing was sent upstream.", code="pii_detected")
        if mapping:
            ctx.body = with_texts(ctx, redacted[:len(messages)])
            for field, msg in zip(side, redacted[len(messages):], strict=True):
                if field == "prediction":
                    ctx.body = {**ctx.body, field: {**ctx.body[field], "content": msg["content"]}}
                else:
                    ctx.body = {**ctx.body, field: msg["content"]}
            ctx.state[PII_MAPPING] = mapping
            if pii.restore:
                ctx.state[PII_RESTORE] = True
        return None

    async def on_response(self, ctx: RequestContext, body: JSON) -> JSON:
        if not ctx.state.get(PII_RESTORE):
            return body
        mapping: dict[str, str] = ctx.state[PII_MAPPING]
        choices = body.get("choices")
        if not isinstance(choices, list):
            return body
        json_answer = _json_answer(ctx)
        calls = any((m := c.get("message") or {}).get("tool_calls") or m.get("function_call")
                    for c in choices if isinstance(c, dict))
        escaped = _escaped(mapping) if json_answer or calls else mapping  # JSON-escaped only where needed
        new = [_restore_choice(c, escaped if json_answer else mapping, escaped, mapping) for c in choices]
        if all(a is b for a, b in zip(new, choices, strict=True)):
            return body
        return {**body, "choices": new}

    def on_stream(self, ctx: RequestContext, chunks: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
        if not ctx.state.get(PII_RESTORE):
            return chunks
        mapping: dict[str, str] = ctx.state[PII_MAPPING]
        escaped = _escaped(mapping)
        text_map = escaped if _json_answer(ctx) else mapping

        def make(slot: Slot, kind: TextKind) -> TextFilter:
            # a refusal and a custom tool's input are free text, not JSON: their originals go back as they were
            return StreamRestorer(escaped if kind == "arguments" else text_map if kind == "content" else mapping)

        return edit_stream(chunks, StreamEditor(make))


def _side_texts(body: JSON, endpoint: str) -> dict[str, JSON]:
    """Texts sent upstream beside the messages or prompt, as messages: a predicted output's content (chat),
    a legacy completion's ``suffix``."""
    if endpoint == "completions":
        suffix = body.get("suffix")
        return {"suffix": {"role": "user", "content": suffix}} if isinstance(suffix, str) and suffix else {}
    prediction = body.get("prediction")
    if endpoint == "chat" and isinstance(prediction, dict) and isinstance(prediction.get("content"), str | list):
        return {"prediction": {"role": "assistant", "content": prediction["content"]}}
    return {}


def _restore_choice(choice: JSON, text_map: Mapping[str, str], escaped: Mapping[str, str],
                    plain: Mapping[str, str]) -> JSON:
    if isinstance(text := choice.get("text"), str):  # legacy completions
        new_text = restore(text, text_map)
        return choice if new_text == text else {**choice, "text": new_text}
    msg = choice.get("message")
    if not isinstance(msg, dict):
        return choice
    new = msg
    if isinstance(content := msg.get("content"), str) and (restored := restore(content, text_map)) != content:
        new = {**new, "content": restored}
    if isinstance(refusal := msg.get("refusal"), str) and (restored := restore(refusal, plain)) != refusal:
        new = {**new, "refusal": restored}  # plain text even when the request asked for JSON
    calls = msg.get("tool_calls")
    if isinstance(calls, list):
        new_calls = [_restore_call(c, plain if call_kind(c) == "custom" else escaped) for c in calls]
        if any(a is not b for a, b in zip(new_calls, calls, strict=True)):
            new = {**new, "tool_calls": new_calls}
    legacy = msg.get("function_call")  # the legacy ``functions`` API: JSON arguments, like a tool call's
    if isinstance(legacy, dict) and isinstance(args := legacy.get("arguments"), str) and (
            restored := restore(args, escaped)) != args:
        new = {**new, "function_call": {**legacy, "arguments": restored}}
    return choice if new is msg else {**choice, "message": new}


def _restore_call(call: JSON, text_map: Mapping[str, str]) -> JSON:
    text = call_text(call)
    if text is None:
        return call
    restored = restore(text, text_map)
    return call if restored == text else with_call_text(call, restored)


def build(deps: StageDeps) -> Stage | None:
    policies = policies_for(deps, "pii")
    if policies is None:
        return None
    return PiiStage(policies, metrics_of(deps))
