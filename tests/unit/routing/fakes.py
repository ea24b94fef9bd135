"""In-process scripted providers and a movable clock for router tests (no network)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aigw import errors
from aigw.config.models import CircuitBreakerConfig, Deployment, ModelRouting
from aigw.providers.base import CallOptions
from aigw.routing.router import Router, Target
from aigw.types import JSON


class Clock:
    """Monotonic and wall time that tests move by hand (on top of a fixed base)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return 1_700_000_000.0 + self.t

    def monotonic(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Step:
    """What the provider does on one call: fail, stall, answer (after a delay), or stream then fail."""

    error: errors.GatewayError | None = None
    delay: float = 0.0
    stall: bool = False
    chunks: int = 3
    fail_after: int | None = None  # stream: raise `error` after this many chunks
    chunk_delay: float = 0.0  # stream: seconds before each chunk after the first (whole answers: in all)
    sent: bool = True  # the request reached the upstream (``CallOptions.sent``); False: still connecting
    refused: bool = False  # an error status came, its body is on its way (``CallOptions.refused``)


def answer(model: str) -> JSON:
    return {"object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}


@dataclass
class Scripted:
    """A provider whose calls follow a script; with the script empty it answers (or repeats `always`)."""

    upstream_model: str
    kind: str = "scripted"
    script: deque[Step] = field(default_factory=deque)
    always: Step | None = None
    calls: int = 0
    inflight: int = 0
    max_inflight: int = 0
    calls_log: list[CallOptions] = field(default_factory=list)

    def push(self, *steps: Step) -> None:
        self.script.extend(steps)

    def _next(self, call: CallOptions) -> Step:
        self.calls += 1
        self.calls_log.append(call)
        step = self.script.popleft() if self.script else self.always or Step()
        call.sent, call.refused = step.sent, step.refused
        return step

    async def _run(self, step: Step) -> None:
        if step.stall:
            await asyncio.sleep(3600)
        if step.delay:
            await asyncio.sleep(step.delay)

    async def chat(self, body: JSON, call: CallOptions) -> JSON:
        step = self._next(call)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await self._run(step)
            if step.chunk_delay:
                await asyncio.sleep(step.chunk_delay * step.chunks)
            if step.error is not None and step.fail_after is None:
                raise step.error
            return answer(self.upstream_model)
        finally:
            self.inflight -= 1

    async def stream_chat(self, body: JSON, call: CallOptions) -> AsyncIterator[JSON]:
        step = self._next(call)
        await self._run(step)
        if step.error is not None and step.fail_after is None:
            raise step.error
        for i in range(step.chunks):
            if step.fail_after is not None and i == step.fail_after:
                assert step.error is not None
                raise step.error
            if i and step.chunk_delay:
                await asyncio.sleep(step.chunk_delay)
            yield {"object": "chat.completion.chunk", "model": self.upstream_model,
                   "choices": [{"index": 0, "delta": {"content": f"c{i}"}, "finish_reason": None}]}
        yield {"object": "chat.completion.chunk", "model": self.upstream_model, "choices": [],
               "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}

    async def list_models(self, call: CallOptions) -> JSON:
        step = self._next(call)
        await self._run(step)
        if step.error is not None:
            raise step.error
        return {"object": "list", "data": []}

    async def aclose(self) -> None:
        return None


def deployment(name: str, idx: int, **extra: Any) -> Deployment:
    d = Deployment(name=name, provider="mock", model=f"{name}-{idx}", **extra)
    d.id = f"{name}#{idx}"
    return d


def build(
    spec: dict[str, list[dict[str, Any]]], routing: dict[str, dict[str, Any]] | None = None,
    breaker: dict[str, Any] | None = None, clock: Any = None, default_timeout_s: float = 600.0,
    seed: int = 7,
) -> tuple[Router, dict[str, Scripted]]:
    """A router over scripted providers: ``{"model": [deployment extras, ...]}`` -> (router, {id: provider})."""
    import random

    targets: list[Target] = []
    providers: dict[str, Scripted] = {}
    for name, extras in spec.items():
        for i, extra in enumerate(extras):
            d = deployment(name, i, **extra)
            p = Scripted(d.model)
            providers[d.id] = p
            targets.append(Target(d, p))
    rules = {k: ModelRouting.model_validate({"backoff_s": 0.001, **v}) for k, v in (routing or {}).items()}
    if "*" not in rules:
        rules["*"] = ModelRouting(backoff_s=0.001)
    cb = CircuitBreakerConfig.model_validate(breaker or {})
    router = Router(targets, default_timeout_s, routing=rules, breaker=cb, clock=clock, rng=random.Random(seed))
    return router, providers
