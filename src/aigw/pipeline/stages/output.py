"""Output checks: leakage, content filter and JSON format, on plain and streamed answers.

Runs on the upstream answer before PII placeholders are restored (post-hooks
run in reverse order), so an original value in the answer means a leak: the
model never saw it. Leakage looks for those originals, the request's system
prompt echoed back and configured canary strings; the content filter for the
policy's words, regexes and categories. When the request asked for
``json_object`` / ``json_schema`` and ``json_schema`` is ``validate`` or
``retry``, the answer must parse (and match the schema); ``retry`` asks the
model once more, telling it what was wrong (paths, never values), and both
calls are billed, each at the deployment that served it. With a budget, the
second call's worst case is reserved before it is made; when the budget cannot
cover it there is no second call, and the answer is the format error it would
have been without ``retry`` (saying why). A block is a 400 naming the kinds.

Streams: ``flow`` checks each delta with a window of what came before and
holds ``holdback`` characters back, so a match is cut before it reaches the
client; the cut is an SSE error event. ``buffer`` (and every JSON-format
answer) waits for the whole answer, checks it, then sends it or the error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aigw.accounting.usage import tokens_from_usage
from aigw.errors import GatewayError, GuardrailBlocked
from aigw.guardrails.output import LeakageCheck, StreamGuard, TextCheck, json_format_errors
from aigw.guardrails.pii import restore_json
from aigw.guardrails.verdict import Verdict
from aigw.observability.metrics import Metrics
from aigw.pipeline.context import ANSWER_BODY, RequestContext
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.stage import Stage
from aigw.pipeline.stages.cache_entry import counted_usage
from aigw.pipeline.stages.guardrail_policy import (
    PII_MAPPING,
    PII_RESTORE,
    Policies,
    Policy,
    metrics_of,
    policies_for,
    record,
)
from aigw.pipeline.stages.guardrail_stream import Slot, StreamEditor, TextKind, edit_stream
from aigw.pipeline.tenancy import CALLS, MEASURE, ROUTE_CAPS, SERVICE, TenancyServices, add_cut
from aigw.routing.router import Router, RouteRequest
from aigw.schema.openai import call_text, content_text
from aigw.schema.replay import replay_chunks
from aigw.types import JSON

RETRY_HEADER = "x-aigw-output-retries"
_JSON_FORMATS = frozenset({"json_object", "json_schema"})
_SEVERITY = {"pass": 0, "flag": 1, "redact": 2, "block": 3}
_MEMO_LIMIT = 256
_CUT_AT_LIMIT = " (the answer was cut at the token limit, max_tokens; not asked again)"


def _stricter(a: Verdict, b: Verdict) -> Verdict:
    """Merge for overlapping stream windows: the same match seen twice is counted once (max, not sum)."""
    action = a.action if _SEVERITY[a.action] >= _SEVERITY[b.action] else b.action
    counts = dict(a.counts)
    for kind, n in b.counts.items():
        counts[kind] = max(counts.get(kind, 0), n)
    return Verdict(action, sorted({*a.reasons, *b.reasons}), counts, max(a.score, b.score))


def _response_format(ctx: RequestContext) -> JSON | None:
    fmt = ctx.body.get("response_format")
    return fmt if isinstance(fmt, dict) and fmt.get("type") in _JSON_FORMATS else None


def _system_prompt(body: JSON) -> str:
    return "\n".join(content_text(m.get("content")) for m in body.get("messages") or ()
                     if isinstance(m, dict) and m.get("role") in ("system", "developer"))


def _add_usage(a: Any, b: Any) -> Any:
    """Two usage objects summed field by field (nested details too)."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return b if a is None else a
    out = dict(a)
    for k, v in b.items():
        old = out.get(k)
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int | float) and isinstance(old, int | float) and not isinstance(old, bool):
            out[k] = old + v
        elif isinstance(v, dict):
            out[k] = _add_usage(old, v) if isinstance(old, dict) else v
        elif old is None:
            out[k] = v
    return out


class _Guarded:
    """One stream slot's StreamGuard as a text filter that raises to cut."""

    def __init__(self, guard: StreamGuard, stage: OutputStage, seen: list[Verdict]) -> None:
        self.guard, self.stage, self.seen = guard, stage, seen

    def feed(self, text: str) -> str:
        d = self.guard.feed(text)
        self.seen[0] = _stricter(self.seen[0], d.verdict)
        if d.cut:
            raise self.stage.blocked(self.seen[0], [])
        return d.emit

    def flush(self) -> str:
        d = self.guard.finish()  # an answer that ends on a word still waiting for its verdict is judged here
        self.seen[0] = _stricter(self.seen[0], d.verdict)
        if d.cut:
            raise self.stage.blocked(self.seen[0], [])
        return d.emit


class OutputStage(Stage):
    name = "output"

    def __init__(self, policies: Policies, router: Router | None = None, metrics: Metrics | None = None,
                 tenancy: TenancyServices | None = None) -> None:
        self.policies = policies
        self.router = router
        self.metrics = metrics
        self.tenancy = tenancy  # its budget stage reserves a retry's worst case before the retry
        self._leaks: dict[tuple[Any, ...], LeakageCheck] = {}

    # -- what to check ------------------------------------------------------------------
    def _checks(self, ctx: RequestContext, policy: Policy) -> list[TextCheck]:
        out = policy.output
        assert out is not None
        checks: list[TextCheck] = []
        if out.leakage != "off":
            mapping: dict[str, str] | None = ctx.state.get(PII_MAPPING)
            system = _system_prompt(ctx.body) if out.system_prompt_words else ""
            if mapping or system or out.canaries:
                checks.append(self._leakage(out.leakage, out.canaries, out.system_prompt_words, system, mapping))
        if policy.content is not None:
            checks.append(policy.content)
        return checks

    def _leakage(self, action: Any, canaries: list[str], words: int, system: str,
                 mapping: dict[str, str] | None) -> LeakageCheck:
        def build() -> LeakageCheck:
            return LeakageCheck(redacted_values=(mapping or {}).values(), system_prompt=system or None,
                                canaries=canaries, min_words=words or 12, action=action)
        if mapping:  # request-scoped values: never memoised
            return build()
        key = (action, tuple(canaries), words, system)
        found = self._leaks.get(key)
        if found is None:
            if len(self._leaks) >= _MEMO_LIMIT:
                self._leaks.clear()
            found = self._leaks[key] = build()
        return found

    def _judge(self, ctx: RequestContext, policy: Policy, checks: list[TextCheck], body: JSON
               ) -> tuple[Verdict, list[str]]:
        texts: list[str] = []
        json_texts: list[str] = []
        for choice in body.get("choices") or ():
            msg = choice.get("message") or {}
            content = msg.get("content") if "message" in choice else choice.get("text")
            if isinstance(content, str):
                texts.append(content)
                if not msg.get("tool_calls"):
                    json_texts.append(content)
            if isinstance(refusal := msg.get("refusal"), str):
                texts.append(refusal)
            texts.extend(call_text(c) or "" for c in msg.get("tool_calls") or ())  # arguments or custom input
        verdict = Verdict()
        text = "\n".join(texts)
        for check in checks:
            verdict = verdict.merge(check.check(text))
        fmt = _response_format(ctx)
        errors: list[str] = []
        if fmt is not None and policy.output is not None and policy.output.json_schema != "off":
            if ctx.state.get(PII_RESTORE):  # judge what the client gets: the originals, not their placeholders
                mapping = ctx.state[PII_MAPPING]
                json_texts = [restore_json(t, mapping) for t in json_texts]
            errors = next((e for t in json_texts if (e := json_format_errors(t, fmt))), [])
        if errors:
            reason = "format:invalid_json" if errors[0].endswith("not valid JSON") else "format:schema"
            verdict = verdict.merge(Verdict("block", [reason], {reason: len(errors)}, 1.0))
        return verdict, errors

    def blocked(self, verdict: Verdict, errors: list[str], note: str = "") -> GuardrailBlocked:
        if errors:
            return GuardrailBlocked("The model's answer does not match the requested response format: "
                                    + "; ".join(errors[:3]) + note, code="output_format")
        kinds = ", ".join(verdict.reasons)
        return GuardrailBlocked(f"The answer was withheld by the output guardrail ({kinds}).", code="output_blocked")

    # -- plain answers ------------------------------------------------------------------
    async def on_response(self, ctx: RequestContext, body: JSON) -> JSON:
        policy = self.policies.for_request(ctx)
        if not policy.output_active or ctx.endpoint == "embeddings":
            return body
        return await self._check_body(ctx, policy, self._checks(ctx, policy), body)

    async def _check_body(self, ctx: RequestContext, policy: Policy, checks: list[TextCheck], body: JSON) -> JSON:
        verdict, errors = self._judge(ctx, policy, checks, body)
        retry = bool(errors) and policy.output is not None and policy.output.json_schema == "retry"
        note = ""
        if errors and any(c.get("finish_reason") == "length" for c in body.get("choices") or ()):
            retry, note = False, _CUT_AT_LIMIT  # the same limit would cut the second answer too
        if retry and all(r.startswith("format:") for r in verdict.reasons):  # a retry cannot fix a leak
            retried = await self._retry(ctx, body, errors)
            if isinstance(retried, str):
                note = retried
            elif retried is not None:
                body = retried
                verdict, errors = self._judge(ctx, policy, checks, body)
        record(ctx, self.name, verdict.to_record(), verdict.action, self.metrics)
        if verdict.blocked:
            raise self.blocked(verdict, errors, note)
        return body

    async def _retry(self, ctx: RequestContext, body: JSON, errors: list[str]) -> JSON | str | None:
        """Ask once more with the errors named; None when there is no router or no time left, a note for the
        error when the budget cannot cover (or cannot check) a second call."""
        if self.router is None or ctx.endpoint != "chat":
            return None
        # the request's whole time (the client's limit, else the model's timeout_s) is shared with the first call
        remaining = self.router.budget_s(ctx.model, ctx.deadline_s) - (time.monotonic() - ctx.started)
        if remaining <= 0:
            return None
        bad = next((c.get("message", {}).get("content") for c in body.get("choices") or ()), None) or ""
        fix = ("Your previous answer did not satisfy the requested response format: " + "; ".join(errors[:5])
               + ". Reply again with only the corrected JSON.")
        retry_body = {k: v for k, v in ctx.body.items() if k not in ("stream", "stream_options")}
        retry_body["messages"] = [*ctx.body.get("messages", ()), {"role": "assistant", "content": bad},
                                  {"role": "user", "content": fix}]
        # a second upstream call, reserved before it is made: concurrent retries cannot overrun a budget
        reserve = self.tenancy.budget_more if self.tenancy is not None else None
        if reserve is not None and (why := await reserve(ctx, retry_body)):
            return why
        # the key's allowed models bind the retry's fallbacks too, and a capped deployment counts the call
        req = RouteRequest(model=ctx.model, body=retry_body, endpoint="chat", deadline_s=remaining,
                           headers={"x-request-id": ctx.request_id}, allowed=ctx.principal.allowed_models,
                           caps=ctx.state.get(ROUTE_CAPS))
        try:
            new, served = await self.router.complete(req)
        except (GatewayError, asyncio.CancelledError):  # failed, or the client left: the first call's usage and
            if req.served is not None:  # deployment stay the request's, and a retry call the upstream took
                ctx.attempts += req.served.attempts  # (or that ran when the client left) bills its prompt
                ctx.upstream_s += req.served.upstream_s
                add_cut(ctx, req.served.cut, retry_body)
            raise
        add_cut(ctx, served.cut, retry_body)  # attempts of the retry cut short before the one that answered
        # both calls are billed: one whose upstream reported no usage is counted locally, or the sum
        # would hold the other call alone
        # (usage without its counts bills nothing: ``tokens_from_usage``)
        first = ctx.usage if tokens_from_usage(ctx.usage) is not None else None
        if first is None and isinstance(answered := ctx.state.pop(ANSWER_BODY, None), dict):
            first = counted_usage(ctx.body, answered)
        retried = new.get("usage")
        second = retried if tokens_from_usage(retried) is not None else counted_usage(retry_body, new)
        ctx.usage = _add_usage(first, second)
        ctx.state.pop(MEASURE, None)  # accounting's count of the first answer alone (its usage, when it had none)
        # each call at the deployment that served it (a retry may fall back to a dearer or cheaper one)
        tier = new.get("service_tier")
        ctx.state[CALLS] = [*(ctx.state.get(CALLS) or [(ctx.served_by, first, ctx.service_tier)]),
                            (served.deployment, second, tier if isinstance(tier, str) else "")]
        ctx.served_by, ctx.served_model = served.deployment, served.model
        ctx.attempts += served.attempts
        ctx.retries += served.retries
        ctx.fallbacks = [*ctx.fallbacks, *served.fallbacks]
        ctx.upstream_s += served.upstream_s
        ctx.response_headers[RETRY_HEADER] = "1"
        return {**new, "usage": ctx.usage} if ctx.usage is not None else new

    # -- streams ------------------------------------------------------------------------
    def on_stream(self, ctx: RequestContext, chunks: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
        policy = self.policies.for_request(ctx)
        if not policy.output_active or ctx.endpoint == "embeddings" or policy.output is None:
            return chunks
        checks = self._checks(ctx, policy)
        json_check = policy.output.json_schema != "off" and _response_format(ctx) is not None
        if json_check or policy.output.stream == "buffer":
            return self._buffered(ctx, policy, checks, chunks)
        if not checks:  # nothing this request could leak, no content lists
            record(ctx, self.name, Verdict().to_record(), "pass", self.metrics)
            return chunks
        return self._flowing(ctx, policy, checks, chunks)

    async def _flowing(self, ctx: RequestContext, policy: Policy, checks: list[TextCheck],
                       chunks: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
        assert policy.output is not None
        holdback = policy.output.holdback
        window = max([256, *(c.window for c in checks if isinstance(c, LeakageCheck))])
        seen = [Verdict()]

        def make(slot: Slot, kind: TextKind) -> _Guarded:
            return _Guarded(StreamGuard(checks, mode="flow", window=window, holdback=holdback), self, seen)

        try:
            async for chunk in edit_stream(chunks, StreamEditor(make)):
                yield chunk
        finally:
            record(ctx, self.name, seen[0].to_record(), seen[0].action, self.metrics)

    async def _buffered(self, ctx: RequestContext, policy: Policy, checks: list[TextCheck],
                        chunks: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
        held = [chunk async for chunk in chunks]
        body = _assemble(held)
        checked = await self._check_body(ctx, policy, checks, body)
        if checked is not body:  # answered again by the retry: replay it as a stream
            held = replay_chunks(checked)
        for chunk in held:
            yield chunk


def _assemble(chunks: Iterable[JSON]) -> JSON:
    """Enough of a chat.completion to check: each choice's text, refusal and tool-call arguments."""
    texts: dict[int, list[str]] = {}
    refusals: dict[int, list[str]] = {}
    args: dict[int, dict[int, list[str]]] = {}
    finishes: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.get("choices") or ():
            i = int(choice.get("index", 0))
            if choice.get("finish_reason") is not None:
                finishes[i] = choice["finish_reason"]
            delta = choice.get("delta") or {}
            text = delta.get("content") if "delta" in choice else choice.get("text")
            if isinstance(text, str):
                texts.setdefault(i, []).append(text)
            if isinstance(refusal := delta.get("refusal"), str):
                refusals.setdefault(i, []).append(refusal)
            for call in delta.get("tool_calls") or ():
                piece = call_text(call)  # a function's arguments or a custom tool's input
                if piece is not None:
                    args.setdefault(i, {}).setdefault(int(call.get("index", 0)), []).append(piece)
    out = []
    for i in sorted(texts.keys() | refusals.keys() | args.keys()):
        calls = [{"function": {"arguments": "".join(parts)}} for _, parts in sorted(args.get(i, {}).items())]
        message: JSON = {"role": "assistant", "content": "".join(texts[i]) if i in texts else None}
        if calls:
            message["tool_calls"] = calls
        if i in refusals:
            message["refusal"] = "".join(refusals[i])
        out.append({"index": i, "message": message, "finish_reason": finishes.get(i)})
    return {"choices": out}


def build(deps: StageDeps) -> Stage | None:
    policies = policies_for(deps, "output")
    if policies is None:
        return None
    tenancy = deps.services.get(SERVICE)
    return OutputStage(policies, deps.router, metrics_of(deps),
                       tenancy if isinstance(tenancy, TenancyServices) else None)
