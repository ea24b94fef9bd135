"""A pipeline of guardrail stages in front of a scripted upstream, for the guardrail stages' unit tests.

The upstream answers with the next scripted text, or echoes the last user message
(so restored placeholders and leaks show up in answers); it streams its answer in
fixed-size pieces, so a test can split a placeholder across chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aigw.config.models import Deployment, GatewayConfig
from aigw.pipeline.context import ANSWER_BODY, Completed, Principal, RequestContext, Result, Streaming
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.pipeline import Pipeline
from aigw.pipeline.stages.guardrail_policy import VERDICTS
from aigw.pipeline.stages.registry import build_stages
from aigw.routing.router import Served
from aigw.schema.openai import last_user_text
from aigw.types import JSON

GUARDRAIL_STAGES = ["validate", "rules", "pii", "injection", "output"]
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


@dataclass
class Upstream:
    """The pipeline's terminal: records every body it got, answers from ``script`` or by echoing."""

    script: list[str] = field(default_factory=list)
    chunk_size: int = 4
    bodies: list[JSON] = field(default_factory=list)
    tool_args: str | None = None  # answer with one tool call carrying these arguments
    tool_kind: str = "function"  # "custom": that call is a custom tool's, ``tool_args`` its free-text input
    reports_usage: bool = True  # False: answers carry no usage (an Ollama-like server), as the router passes them
    usage: JSON | None = None  # the usage answers carry in place of USAGE (e.g. null counts, which bill nothing)
    refusal: bool = False  # answer the text as a refusal (``message.refusal``, ``delta.refusal``)
    finish: str = "stop"  # a text answer's finish_reason ("length": cut at the token limit)

    def answer(self, body: JSON) -> str:
        return self.script.pop(0) if self.script else "Echo: " + last_user_text(body)

    def completion(self, body: JSON) -> JSON:
        self.bodies.append(body)
        text = self.answer(body)
        message: JSON = {"role": "assistant", "content": None if self.tool_args or self.refusal else text}
        if self.refusal:
            message["refusal"] = text
        if self.tool_args is not None:
            kind, field = self._tool_fields()
            message["tool_calls"] = [{"id": "call_1", "type": kind, kind: {"name": "send", field: self.tool_args}}]
        return {"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": body.get("model"),
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": "tool_calls" if self.tool_args else self.finish}],
                **({"usage": dict(self.usage or USAGE)} if self.reports_usage else {})}

    async def handle(self, ctx: RequestContext) -> Result:
        ctx.served_by = Deployment(name=ctx.model, provider="mock", id=f"{ctx.model}#0")
        ctx.served_model = ctx.model
        if ctx.stream:
            self.bodies.append(ctx.body)
            return Streaming(self._stream(ctx, self.answer(ctx.body)))
        body = self.completion(ctx.body)
        if self.reports_usage:
            ctx.usage = body["usage"]
        ctx.state[ANSWER_BODY] = body  # what the route terminal keeps for the ledger's local count
        return Completed(body)

    def _tool_fields(self) -> tuple[str, str]:
        return ("custom", "input") if self.tool_kind == "custom" else ("function", "arguments")

    async def _stream(self, ctx: RequestContext, text: str) -> AsyncIterator[JSON]:
        head = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": ctx.model}

        def chunk(delta: JSON, finish: str | None = None) -> JSON:
            return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        yield chunk({"role": "assistant", "content": ""})
        if self.tool_args is not None:
            kind, field = self._tool_fields()
            yield chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": kind, kind: {"name": "send", field: ""}}]})
            for i in range(0, len(self.tool_args), self.chunk_size):
                piece = self.tool_args[i:i + self.chunk_size]
                yield chunk({"tool_calls": [{"index": 0, kind: {field: piece}}]})
            yield chunk({}, "tool_calls")
        else:
            field = "refusal" if self.refusal else "content"
            for i in range(0, len(text), self.chunk_size):
                yield chunk({field: text[i:i + self.chunk_size]})
            yield chunk({}, self.finish)
        ctx.usage = dict(USAGE)
        yield {**head, "choices": [], "usage": dict(USAGE)}


class FakeRouter:
    """What the output stage's retry calls: ``complete`` answered by the same scripted upstream."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.calls = 0
        self.budget = 600.0  # the model's whole time (``Router.budget_s``), unless the client's limit is shorter
        self.deadlines: list[float | None] = []  # each call's ``deadline_s``

    def budget_s(self, model: str, deadline_s: float | None = None) -> float:
        return min(self.budget, deadline_s) if deadline_s else self.budget

    async def complete(self, req: Any) -> tuple[JSON, Served]:
        self.calls += 1
        self.deadlines.append(req.deadline_s)
        body = self.upstream.completion(req.body)
        served = Served(deployment=Deployment(name=req.model, provider="mock", id=f"{req.model}#0"),
                        model=req.model)
        return body, served


def config(guardrails: JSON | None = None, **extra: Any) -> GatewayConfig:
    raw: JSON = {"models": [{"name": "mock", "provider": "mock"}, {"name": "small", "provider": "mock"}]}
    if guardrails is not None:
        raw["guardrails"] = guardrails
    raw.update(extra)
    return GatewayConfig.model_validate(raw)


class Harness:
    def __init__(self, cfg: GatewayConfig, upstream: Upstream | None = None,
                 services: dict[str, Any] | None = None, stages: list[str] | None = None) -> None:
        self.upstream = upstream or Upstream()
        self.router = FakeRouter(self.upstream)
        deps = StageDeps(config=cfg, router=self.router, services=dict(services or {}))  # type: ignore[arg-type]
        self.stages = build_stages(stages or GUARDRAIL_STAGES, deps)
        self.pipeline = Pipeline(self.stages, self.upstream)

    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def ctx(self, body: JSON, *, endpoint: str = "chat", extra: dict[str, Any] | None = None) -> RequestContext:
        return RequestContext(request_id="req1", api="openai", endpoint=endpoint,  # type: ignore[arg-type]
                              body=body, model=body["model"], stream=bool(body.get("stream")),
                              principal=Principal(key_id="key_1", extra=dict(extra or {})))

    async def run(self, ctx: RequestContext) -> JSON:
        result = await self.pipeline.run(ctx)
        assert isinstance(result, Completed)
        return result.body

    async def stream(self, ctx: RequestContext, into: list[JSON] | None = None) -> list[JSON]:
        """All chunks; with ``into``, chunks are appended as they arrive (kept if the stream then fails)."""
        result = await self.pipeline.run(ctx)
        assert isinstance(result, Streaming)
        out = into if into is not None else []
        async for chunk in result.chunks:
            out.append(chunk)
        return out


def chat(text: str, *, model: str = "mock", system: str | None = None, **extra: Any) -> JSON:
    messages: list[JSON] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    return {"model": model, "messages": messages, **extra}


def streamed_text(chunks: list[JSON]) -> str:
    return "".join((c.get("delta") or {}).get("content") or "" for ch in chunks for c in ch.get("choices") or ())


def verdicts(ctx: RequestContext) -> dict[str, Any]:
    found: dict[str, Any] = ctx.state.get(VERDICTS) or {}
    return found
