"""The observe stage: metrics, one log line and one request-log record per request, traces.

First in the pipeline, so its request span covers every other stage. Its
``record`` runs once per request after every other stage finished (the
``ObservedPipeline`` in ``pipeline/observed.py`` calls it), so it sees every
outcome (success, error, rejection, client gone) and the cost accounting put
on the context. Everything it does per request is
cheap and in-process: counters, one log call, one append to the request log's
buffer. Tracing and body capture are separate paths that exist only when
switched on (a ``None`` check otherwise).

What it needs comes from ``deps.services``: ``metrics`` (observability.metrics),
``request_log`` (a RequestLogWriter) and ``tracing`` (observability.tracing),
each optional.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from aigw.observability.logging import SCRUBBER, log_fields
from aigw.observability.metrics import NONE, Metrics, Sample
from aigw.observability.request_log import RequestLogWriter, RequestRecord
from aigw.observability.tracing import Tracing, request_attributes, usage_attributes
from aigw.pipeline.context import RequestContext
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.stage import Stage
from aigw.types import JSON

_PII_MAPPING = "guardrails.pii.mapping"  # ctx.state: placeholder -> original, set by the pii stage
_PII_DETECTOR = "guardrails.pii.detector"  # ctx.state: the PiiDetector of the request's policy, set by the pii stage

log = logging.getLogger("aigw.request")
ROUTED = "observe.routed"  # set by ObservedTerminal: the router was reached
_STARTED = "observe.started"
_SPAN = "observe.span"
_RESPONSE = "observe.response"
# Kinds that, before any upstream was called, mean "the gateway itself said no".
REJECTIONS = frozenset({"rate_limited", "budget_exceeded", "guardrail_blocked", "permission_denied"})
CLIENT_GONE = 499  # nginx's "client closed request"
GONE_KIND = "client_disconnected"  # its error_kind (the error the HTTP layer sets is a bare GatewayError)
GUARDRAILS = "guardrails"  # ctx.state: guardrail stage -> verdict record, set by the guardrail stages


def status_of(ctx: RequestContext) -> int:
    err = ctx.error
    if err is None:
        return 200
    return CLIENT_GONE if err.code == "client_disconnected" else int(err.status)


def tokens_of(usage: JSON | None) -> dict[str, int]:
    if not usage:
        return {}
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    return {
        "input": int(usage.get("prompt_tokens") or 0),
        "output": int(usage.get("completion_tokens") or 0),
        "cached_input": int(prompt.get("cached_tokens") or 0),
        "cache_write": int(prompt.get("cache_write_tokens") or 0),
        "reasoning": int(completion.get("reasoning_tokens") or 0),
    }


MEASURED = "tenancy.measure"  # accounting's memo: .tokens (disjoint counts) and .cost_nano


def measured(ctx: RequestContext) -> tuple[dict[str, int] | None, float]:
    """Tokens and USD as accounting priced them (its local count when the provider sent no usage)."""
    m = ctx.state.get(MEASURED)
    if m is None:
        return None, 0.0
    t = getattr(m, "tokens", None)
    cost = float(getattr(m, "cost_nano", 0) or 0) / 1e9
    if t is None:
        return None, cost
    tokens = {"input": int(t.prompt), "output": int(t.completion), "cached_input": int(t.cached_input),
              "cache_write": int(t.cache_write), "reasoning": int(t.reasoning)}
    return tokens, cost


class Observe(Stage):
    name = "observe"

    def __init__(self, metrics: Metrics | None, writer: RequestLogWriter | None, tracing: Tracing | None,
                 log_requests: bool, wall: Callable[[], float]) -> None:
        self.metrics, self.writer, self.tracing = metrics, writer, tracing
        self.log_requests = log_requests
        self._wall = wall

    async def on_request(self, ctx: RequestContext) -> None:
        ctx.state[_STARTED] = ctx.model  # the in-flight gauge is lowered under it (a rules route changes ctx.model)
        if self.metrics is not None:
            self.metrics.started(ctx.model)
        if self.tracing is not None:
            op = request_attributes("", ctx.endpoint, ctx.model, ctx.body)
            del op["gen_ai.system"], op["gen_ai.provider.name"]
            op["aigw.request_id"] = ctx.request_id
            name = f"{op['gen_ai.operation.name']} {ctx.model}"
            ctx.state[_SPAN] = self.tracing.start_request(name, ctx.headers, ctx.started, op)
        return None

    async def record(self, ctx: RequestContext) -> None:
        """Count, log and keep one finished request (after every stage's on_finish)."""
        now = time.monotonic()
        status = status_of(ctx)
        priced, cost = measured(ctx)
        tokens = priced if priced is not None else tokens_of(ctx.usage)
        d = ctx.served_by
        provider, deployment = (d.provider, d.id) if d is not None else (ctx.handled_by or NONE,) * 2
        duration = now - ctx.started
        # a client gone is no failure of the gateway's or the upstream's: named as the ledger names it
        kind = "" if ctx.error is None else GONE_KIND if status == CLIENT_GONE else ctx.error.kind
        rejected = kind if kind in REJECTIONS and not ctx.state.get(ROUTED) else ""
        if self.metrics is not None:
            if (started := ctx.state.get(_STARTED)) is not None:
                self.metrics.finished(started)
            self.metrics.record(Sample(
                api=ctx.api, model=ctx.model, provider=provider, deployment=deployment, status=status,
                duration_s=duration, tenant=ctx.principal.tenant_id, upstream_s=ctx.upstream_s,
                first_token_s=ctx.first_token_s, tokens=tokens, cost_usd=cost, retries=ctx.retries,
                fallback_model=ctx.served_model if ctx.served_model != ctx.model else "",
                rejected=rejected))
        if self.writer is None and not self.log_requests and self.tracing is None:
            return
        fields = self._fields(ctx, status, kind, tokens, cost, duration, provider if d else "",
                              deployment if d else "")
        if self.log_requests:
            log_fields(log, logging.WARNING if status >= 500 else logging.INFO, "request", fields)
        if self.writer is not None:
            self.writer.add(RequestRecord(ts=self._wall() - duration, **fields))
        if self.tracing is not None and (handle := ctx.state.pop(_SPAN, None)) is not None:
            self._end_span(handle, ctx, fields)

    def _fields(self, ctx: RequestContext, status: int, kind: str, tokens: dict[str, int], cost: float,
                duration: float, provider: str, deployment: str) -> dict[str, Any]:
        """The request's metadata: the log line's fields, and the request log record's (with ``ts``)."""
        p = ctx.principal
        upstream_ms = ctx.upstream_s * 1000
        latency_ms = duration * 1000
        fields: dict[str, Any] = {
            "request_id": ctx.request_id, "api": ctx.api, "endpoint": ctx.endpoint, "tenant_id": p.tenant_id,
            "project_id": p.project_id, "key_id": p.key_id, "key_prefix": p.key_prefix, "model": ctx.model,
            "served_model": ctx.served_model, "provider": provider, "deployment": deployment, "status": status,
            "error_kind": kind, "stream": ctx.stream, "cache": ctx.handled_by,
            "input_tokens": tokens.get("input", 0), "output_tokens": tokens.get("output", 0),
            "cached_tokens": tokens.get("cached_input", 0), "reasoning_tokens": tokens.get("reasoning", 0),
            "cost_usd": cost, "latency_ms": round(latency_ms, 3), "upstream_ms": round(upstream_ms, 3),
            "overhead_ms": round(max(0.0, latency_ms - upstream_ms), 3),
            "ttft_ms": round(ctx.first_token_s * 1000, 3) if ctx.first_token_s is not None else None,
            "attempts": ctx.attempts, "retries": ctx.retries, "fallbacks": list(ctx.fallbacks),
        }
        if guardrails := ctx.state.get(GUARDRAILS):
            fields["guardrails"] = guardrails
        return fields

    def _end_span(self, handle: tuple[Any, Any], ctx: RequestContext, f: dict[str, Any]) -> None:
        attrs: dict[str, Any] = {
            "http.response.status_code": f["status"], "aigw.tenant_id": f["tenant_id"],
            "aigw.key_prefix": f["key_prefix"], "aigw.cache": f["cache"], "aigw.attempts": f["attempts"],
            "aigw.retries": f["retries"], "aigw.overhead_ms": f["overhead_ms"],
        }
        if f["served_model"]:
            attrs["aigw.served_model"] = f["served_model"]
        if f["provider"]:
            attrs["gen_ai.provider.name"] = attrs["gen_ai.system"] = f["provider"]
        attrs.update(usage_attributes(ctx.usage))
        assert self.tracing is not None
        self.tracing.end_request(handle[0], handle[1], attrs, f["error_kind"] or None, f["status"])


class ObserveBodies(Observe):
    """Observe plus prompt and answer capture (``observability.log_bodies``), PII-redacted and capped."""

    def __init__(self, *args: Any, redact: Callable[[str], str], max_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._redact, self._max = redact, max_bytes

    async def on_response(self, ctx: RequestContext, body: JSON) -> JSON:
        ctx.state[_RESPONSE] = _answer_text(body)
        return body

    def on_stream(self, ctx: RequestContext, chunks: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
        return self._collect(ctx, chunks)

    async def _collect(self, ctx: RequestContext, chunks: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
        parts: list[str] = []
        size = 0
        try:
            async for chunk in chunks:
                if size < self._max:
                    text = _answer_text(chunk)
                    parts.append(text)
                    size += len(text)
                yield chunk
        finally:
            ctx.state[_RESPONSE] = "".join(parts)

    def _fields(self, ctx: RequestContext, *args: Any) -> dict[str, Any]:
        fields = super()._fields(ctx, *args)
        own = _policy_redactor(ctx)
        fields["request_body"] = self._cap(_prompt_text(ctx.body), own)
        # the answer was captured after the pii stage restored it: the values that stage redacted go back to
        # their placeholders first (a custom kind, ``EMP-\d{6}``, is unknown to the built-in detector)
        answer = str(ctx.state.get(_RESPONSE) or "")
        mapping = ctx.state.get(_PII_MAPPING)
        if isinstance(mapping, dict) and answer:
            for placeholder, value in sorted(mapping.items(), key=lambda kv: -len(kv[1])):
                if value:
                    answer = answer.replace(value, placeholder)
        fields["response_body"] = self._cap(answer, own)
        return fields

    def _cap(self, text: str, own: Callable[[str], str] | None = None) -> str:
        # redact before cutting, so no value is cut in half; config's own secrets (an upstream key, the master
        # key pasted into a prompt) go too, as in the log line: the request log is read through the admin API
        text = self._redact(text[: self._max * 2])
        text = SCRUBBER.known(own(text) if own is not None else text)
        raw = text.encode()
        return text if len(raw) <= self._max else raw[: self._max].decode(errors="ignore") + "…"


def _prompt_text(body: JSON) -> str:
    if "messages" in body:
        return orjson.dumps(body["messages"]).decode()
    value = body.get("prompt", body.get("input", ""))
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _answer_text(body: JSON) -> str:
    out: list[str] = []
    for choice in body.get("choices") or ():
        part = choice.get("message") or choice.get("delta") or {}
        if isinstance(content := part.get("content"), str):
            out.append(content)
        elif isinstance(text := choice.get("text"), str):
            out.append(text)
    return "".join(out)


def _policy_redactor(ctx: RequestContext) -> Callable[[str], str] | None:
    """The redaction of the PII policy the request ran under, which knows its custom kinds (``EMP-\\d{6}``) where the
    built-in detector does not: the body holds them raw in ``flag`` and ``block`` modes (and a blocked request's
    body is the very one to keep out of the log)."""
    detector = ctx.state.get(_PII_DETECTOR)
    if detector is None:
        return None
    from aigw.guardrails.pii import Redactor

    return Redactor(detector).redact_text


def _pii_redactor() -> Callable[[str], str] | None:
    """The guardrails PII module's redaction, or None when it is not available."""
    try:
        from aigw.guardrails.pii import PiiDetector, Redactor

        detector = PiiDetector()
        return lambda text: Redactor(detector).redact_text(text)
    except Exception:  # missing or changed module: log no bodies rather than unredacted ones
        return None


def build(deps: StageDeps) -> Stage | None:
    obs = deps.config.observability
    services = deps.services
    metrics, writer, tracing = services.get("metrics"), services.get("request_log"), services.get("tracing")
    if metrics is None and writer is None and tracing is None and not obs.log_requests:
        return None
    args = (metrics, writer, tracing, obs.log_requests, deps.clock.now)
    if obs.log_bodies:
        redact = _pii_redactor()
        if redact is not None:
            return ObserveBodies(*args, redact=redact, max_bytes=obs.body_max_bytes)
        logging.getLogger("aigw").warning("observability.log_bodies is on but PII redaction "
                                          "(aigw.guardrails.pii) is unavailable: bodies are not logged")
    return Observe(*args)
