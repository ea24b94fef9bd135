"""Wrappers ``app.py`` puts around the terminal, the stages and the providers for observability.

- ``ObservedTerminal`` marks that the router was reached, so the observe stage
  can tell a gateway rejection (limits, budget) from an upstream's own 429.
- ``traced_stages`` / ``traced_provider`` exist only when tracing is on: a span
  per stage hook and a CLIENT span per upstream attempt, whose ``traceparent``
  replaces the one forwarded upstream. With tracing off nothing is wrapped.

Wrappers override exactly the hooks and capabilities their target has, so the
pipeline's "only call what a stage defines" and the router's capability checks
(``isinstance(p, SupportsEmbeddings)``) see the same object shape as before.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aigw.config.models import Deployment
from aigw.observability.tracing import Tracing, request_attributes, response_attributes, usage_attributes
from aigw.pipeline.context import RequestContext, Result
from aigw.pipeline.pipeline import Pipeline, Terminal
from aigw.pipeline.stage import Stage, overrides
from aigw.pipeline.stages.observe import ROUTED, Observe
from aigw.providers.base import CallOptions, Provider
from aigw.types import JSON

log = logging.getLogger("aigw.pipeline")


class ObservedTerminal:
    def __init__(self, inner: Terminal) -> None:
        self.inner = inner

    async def handle(self, ctx: RequestContext) -> Result:
        ctx.state[ROUTED] = True
        return await self.inner.handle(ctx)


class ObservedPipeline(Pipeline):
    """The pipeline, plus the observe stage's ``record`` after every stage's ``on_finish``.

    Recording last lets metrics and the log line carry what finish hooks work out
    (accounting's cost and local token counts), whatever the stage order is.
    """

    def __init__(self, stages: Sequence[Stage], terminal: Terminal) -> None:
        super().__init__(stages, ObservedTerminal(terminal))
        self._observe = next((s for s in self.stages if isinstance(s, Observe)), None)
        self.finishes = self.finishes or self._observe is not None

    async def finish(self, ctx: RequestContext) -> None:
        await super().finish(ctx)
        if self._observe is not None:
            try:
                await self._observe.record(ctx)
            except Exception:  # observability must never break the response
                log.exception("observe: recording the request failed", extra=ctx.log_ids())


# -- stages ----------------------------------------------------------------------------
def traced_stages(stages: list[Stage], tracing: Tracing) -> list[Stage]:
    if not tracing.stage_spans:
        return stages
    return [s if s.name == "observe" else _traced_stage(s, tracing) for s in stages]


def _traced_stage(stage: Stage, tracing: Tracing) -> Stage:
    hooks: dict[str, Any] = {"name": stage.name}
    if overrides(stage, "on_request"):
        async def on_request(self: Stage, ctx: RequestContext) -> Result | None:
            with tracing.stage(stage.name, "request"):
                return await stage.on_request(ctx)
        hooks["on_request"] = on_request
    if overrides(stage, "on_response"):
        async def on_response(self: Stage, ctx: RequestContext, body: JSON) -> JSON:
            with tracing.stage(stage.name, "response"):
                return await stage.on_response(ctx, body)
        hooks["on_response"] = on_response
    if overrides(stage, "on_stream"):
        hooks["on_stream"] = lambda self, ctx, chunks: stage.on_stream(ctx, chunks)
    if overrides(stage, "on_finish"):
        hooks["on_finish"] = lambda self, ctx: stage.on_finish(ctx)
    cls = type(f"Traced{type(stage).__name__}", (Stage,), hooks)
    wrapped: Stage = cls()
    wrapped.inner = stage  # type: ignore[attr-defined]
    return wrapped


# -- providers -------------------------------------------------------------------------
_CALLS = {"chat": "chat", "completions": "completions", "embeddings": "embeddings"}
_STREAMS = {"stream_chat": "chat", "stream_completions": "completions"}


class _TracedProvider:
    """Delegates everything to the wrapped adapter; traced methods are added per instance class."""

    def __init__(self, inner: Provider, deployment: Deployment, tracing: Tracing) -> None:
        self.inner, self.deployment, self.tracing = inner, deployment, tracing
        self.kind, self.upstream_model = inner.kind, inner.upstream_model

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _start(self, operation: str, body: JSON, call: CallOptions) -> tuple[Any, CallOptions]:
        d = self.deployment
        attrs = request_attributes(d.provider, operation, d.model, body)
        attrs["aigw.deployment"] = d.id
        span = self.tracing.start_attempt(f"{attrs['gen_ai.operation.name']} {d.model}", attrs)
        tp = self.tracing.traceparent(span)
        headers = {**call.headers, "traceparent": tp} if tp else call.headers
        return span, dataclasses.replace(call, headers=headers)

    async def _call(self, method: str, body: JSON, call: CallOptions) -> JSON:
        span, call = self._start(_CALLS[method], body, call)
        try:
            result: JSON = await getattr(self.inner, method)(body, call)
            span.set_attributes(response_attributes(result))
            return result
        except BaseException as exc:
            self.tracing.fail(span, exc)
            raise
        finally:
            span.end()

    async def _stream(self, method: str, body: JSON, call: CallOptions) -> AsyncIterator[JSON]:
        span, call = self._start(_STREAMS[method], body, call)
        source: AsyncIterator[JSON] = getattr(self.inner, method)(body, call)
        first = True
        try:
            async for chunk in source:
                if first:
                    span.add_event("gen_ai.first_chunk")
                    if isinstance(v := chunk.get("model"), str):
                        span.set_attribute("gen_ai.response.model", v)
                    first = False
                if usage := chunk.get("usage"):
                    span.set_attributes(usage_attributes(usage))
                yield chunk
        except GeneratorExit:
            raise
        except BaseException as exc:
            self.tracing.fail(span, exc)
            raise
        finally:
            span.end()
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()


def _call_method(name: str) -> Callable[..., Any]:
    async def method(self: _TracedProvider, body: JSON, call: CallOptions) -> JSON:
        return await self._call(name, body, call)
    return method


def _stream_method(name: str) -> Callable[..., Any]:
    def method(self: _TracedProvider, body: JSON, call: CallOptions) -> AsyncIterator[JSON]:
        return self._stream(name, body, call)
    return method


def traced_provider(inner: Provider, deployment: Deployment, tracing: Tracing) -> Provider:
    """The adapter with a span per call, keeping exactly its capabilities."""
    methods: dict[str, Any] = {}
    for name in _CALLS:
        if callable(getattr(inner, name, None)):
            methods[name] = _call_method(name)
    for name in _STREAMS:
        if callable(getattr(inner, name, None)):
            methods[name] = _stream_method(name)
    if callable(getattr(inner, "list_models", None)):  # a capability, not traced (health probes)
        methods["list_models"] = lambda self, call: self.inner.list_models(call)
    cls = type(f"Traced{type(inner).__name__}", (_TracedProvider,), methods)
    wrapped: Provider = cls(inner, deployment, tracing)
    return wrapped
