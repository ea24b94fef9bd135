"""OpenTelemetry traces: one span per request, per pipeline stage, per upstream attempt.

Optional (``pip install aigw[otel]``) and off by default. When off, nothing here
is imported or called on the request path: the observe stage holds ``None``
instead of a ``Tracing``, no stage or provider is wrapped, and no span object
is ever created.

When on, an incoming W3C ``traceparent`` is honoured (the request span becomes
its child) and each upstream attempt sends its own span's ``traceparent``
upstream, so the provider's trace hangs under the attempt that called it.
Attributes follow the OpenTelemetry GenAI semantic conventions (``gen_ai.*``).
The tracer provider is our own, never the process-global one, so two gateways
in one process (tests) do not share exporters.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from aigw.config.observability import TracingConfig

# Provider kinds in config -> the gen_ai.provider.name / gen_ai.system well-known values.
GEN_AI_SYSTEMS = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "openai_compatible": "openai",
    "gemini": "gcp.gemini",
    "bedrock": "aws.bedrock",
    "mock": "mock",
}
OPERATIONS = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}
_REQUEST_PARAMS = (
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
    ("seed", "gen_ai.request.seed"),
)


class TracingUnavailable(RuntimeError):
    """Tracing is switched on but the OpenTelemetry SDK is not installed."""


# -- gen_ai.* attributes (pure) ----------------------------------------------------------
def request_attributes(provider: str, operation: str, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
    system = GEN_AI_SYSTEMS.get(provider, provider)
    out: dict[str, Any] = {
        "gen_ai.system": system,
        "gen_ai.provider.name": system,
        "gen_ai.operation.name": OPERATIONS.get(operation, operation),
        "gen_ai.request.model": model,
    }
    for key, attr in _REQUEST_PARAMS:
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[attr] = value
    return out


def usage_attributes(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    if not usage:
        return {}
    out: dict[str, Any] = {}
    if isinstance(n := usage.get("prompt_tokens"), int):
        out["gen_ai.usage.input_tokens"] = n
    if isinstance(n := usage.get("completion_tokens"), int):
        out["gen_ai.usage.output_tokens"] = n
    return out


def response_attributes(body: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(v := body.get("id"), str):
        out["gen_ai.response.id"] = v
    if isinstance(v := body.get("model"), str):
        out["gen_ai.response.model"] = v
    reasons = [c.get("finish_reason") for c in body.get("choices") or () if isinstance(c, dict)]
    if reasons := [r for r in reasons if isinstance(r, str)]:
        out["gen_ai.response.finish_reasons"] = reasons
    out.update(usage_attributes(body.get("usage")))
    return out


# -- the tracer ------------------------------------------------------------------------
class Tracing:
    """Builds spans on a private tracer provider; ``exporter`` overrides config (tests)."""

    def __init__(self, config: TracingConfig, exporter: Any = None) -> None:
        try:
            from opentelemetry import context, trace
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise TracingUnavailable("observability.tracing.enabled needs `pip install aigw[otel]`") from exc
        self._context, self._trace = context, trace
        self._propagator = TraceContextTextMapPropagator()
        self._kind = trace.SpanKind
        self._error = trace.Status(trace.StatusCode.ERROR)
        sampler = ParentBased(TraceIdRatioBased(config.sample_ratio))
        resource = Resource.create({"service.name": config.service_name})
        self.provider = TracerProvider(sampler=sampler, resource=resource)
        if exporter is not None:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif (built := _exporter(config)) is not None:
            self.provider.add_span_processor(BatchSpanProcessor(built))
        self.tracer = self.provider.get_tracer("aigw")
        self.stage_spans = config.stage_spans

    def add_exporter(self, exporter: Any) -> None:
        """Send every finished span to ``exporter`` as well, synchronously (tests, debugging)."""
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        self.provider.add_span_processor(SimpleSpanProcessor(exporter))

    # request spans: started by the observe stage, current for everything inside the request
    def start_request(self, name: str, headers: Mapping[str, str], started_monotonic: float,
                      attributes: dict[str, Any]) -> tuple[Any, Any]:
        parent = self._propagator.extract(headers) if "traceparent" in headers else None
        start_ns = time.time_ns() - int((time.monotonic() - started_monotonic) * 1e9)
        span = self.tracer.start_span(name, context=parent, kind=self._kind.SERVER, attributes=attributes,
                                      start_time=start_ns)
        token = self._context.attach(self._trace.set_span_in_context(span))
        return span, token

    def end_request(self, span: Any, token: Any, attributes: dict[str, Any], error: str | None,
                    status: int = 500) -> None:
        """``error``: the request's error kind, set as ``error.type``. The span's status is an error only for a
        5xx: OpenTelemetry's HTTP conventions leave a server span's status unset for a 4xx (the client's
        request was refused; the gateway did not fail), so alerts on error spans track the gateway's health."""
        span.set_attributes(attributes)
        if error:
            span.set_attribute("error.type", error)
            if status >= 500:
                span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, error))
        span.end()
        with contextlib.suppress(Exception):  # a detach from another context: nothing to restore
            self._context.detach(token)

    @contextmanager
    def stage(self, name: str, hook: str) -> Iterator[Any]:
        with self.tracer.start_as_current_span(f"aigw.stage {name}", kind=self._kind.INTERNAL,
                                               attributes={"aigw.stage": name, "aigw.stage.hook": hook}) as span:
            yield span

    # upstream attempts: children of the current span, never made current themselves
    # (an attempt may be a stream whose generator resumes in other contexts)
    def start_attempt(self, name: str, attributes: dict[str, Any]) -> Any:
        return self.tracer.start_span(name, kind=self._kind.CLIENT, attributes=attributes)

    def traceparent(self, span: Any) -> str | None:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        return carrier.get("traceparent")

    def fail(self, span: Any, exc: BaseException) -> None:
        kind = getattr(exc, "kind", type(exc).__name__)
        span.set_attribute("error.type", kind)
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, kind))

    def shutdown(self) -> None:
        self.provider.shutdown()


def _exporter(config: TracingConfig) -> Any:
    if config.exporter == "none":
        return None
    if config.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise TracingUnavailable("the OTLP exporter needs `pip install aigw[otel]`") from exc
    return OTLPSpanExporter(endpoint=config.endpoint, headers=dict(config.headers) or None)
