"""Turns a public model name into an upstream call.

The router knows deployments (config + built provider) and picks one per
attempt. It does not know tenants, keys or caches; the pipeline's route
terminal adapts a request context to ``RouteRequest`` and reads ``Served`` back.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aigw import errors
from aigw.config.models import Deployment
from aigw.providers.base import CallOptions, Provider, SupportsCompletions, SupportsEmbeddings, Timeouts
from aigw.schema import legacy
from aigw.types import JSON

Endpoint = str  # "chat" | "completions" | "embeddings"


@dataclass(slots=True)
class Target:
    """A deployment with its built provider adapter."""

    deployment: Deployment
    provider: Provider


@dataclass(slots=True)
class RouteRequest:
    model: str
    body: JSON
    endpoint: Endpoint = "chat"
    deadline_s: float | None = None  # the client's own whole-request limit
    headers: dict[str, str] = field(default_factory=dict)  # forwarded upstream (traceparent, request id)


@dataclass(slots=True)
class Served:
    """What happened on the way: which deployment answered and how long it took."""

    deployment: Deployment | None = None
    model: str = ""  # public model that answered (differs from the asked one after a fallback)
    attempts: int = 0
    retries: int = 0
    fallbacks: list[str] = field(default_factory=list)
    upstream_s: float = 0.0
    first_token_s: float | None = None


class Router:
    def __init__(self, targets: list[Target], default_timeout_s: float = 600.0) -> None:
        self._by_model: dict[str, list[Target]] = {}
        for t in targets:
            self._by_model.setdefault(t.deployment.name, []).append(t)
        self._default_timeout_s = default_timeout_s

    # -- catalogue ---------------------------------------------------------------
    def model_names(self) -> list[str]:
        return list(self._by_model)

    def targets(self, model: str) -> list[Target]:
        return self._by_model.get(model, [])

    def all_targets(self) -> list[Target]:
        return [t for ts in self._by_model.values() for t in ts]

    def candidates(self, model: str, endpoint: Endpoint) -> list[Target]:
        targets = self._by_model.get(model)
        if not targets:
            raise errors.NotFound(f"The model `{model}` does not exist or you do not have access to it.",
                                  param="model", code="model_not_found")
        mode = "embeddings" if endpoint == "embeddings" else "chat"
        usable = [t for t in targets if mode in t.deployment.modes or (endpoint == "completions"
                                                                        and "completions" in t.deployment.modes)]
        if not usable:
            raise errors.InvalidRequest(f"The model `{model}` does not support {endpoint}.", param="model")
        return usable

    def pick(self, targets: list[Target]) -> Target:
        if len(targets) == 1:
            return targets[0]
        return random.choices(targets, weights=[t.deployment.weight for t in targets])[0]

    def timeouts_for(self, target: Target, req: RouteRequest) -> Timeouts:
        d = target.deployment
        limits = [x for x in (d.timeout_s, req.deadline_s, self._default_timeout_s) if x]
        total = min(limits) if limits else None
        return Timeouts(connect=d.connect_timeout_s or 10.0, first_token=d.first_token_timeout_s or total,
                        total=total)

    # -- calls -------------------------------------------------------------------
    async def complete(self, req: RouteRequest) -> tuple[JSON, Served]:
        target = self.pick(self.candidates(req.model, req.endpoint))
        served = Served(deployment=target.deployment, model=req.model, attempts=1)
        call = CallOptions(timeouts=self.timeouts_for(target, req), headers=req.headers)
        started = time.monotonic()
        try:
            async with asyncio.timeout(call.timeouts.total):
                body = await self._call(target, req, call)
        except TimeoutError:
            raise errors.UpstreamTimeout("the upstream did not answer within the request timeout") from None
        finally:
            served.upstream_s = time.monotonic() - started
        return body, served

    async def _call(self, target: Target, req: RouteRequest, call: CallOptions) -> JSON:
        p, body = target.provider, req.body
        if req.endpoint == "embeddings":
            if not isinstance(p, SupportsEmbeddings):
                raise errors.InvalidRequest(f"The model `{req.model}` does not support embeddings.", param="model")
            return await p.embeddings(body, call)
        if req.endpoint == "completions":
            if isinstance(p, SupportsCompletions) and "completions" in target.deployment.modes:
                return await p.completions(body, call)
            return legacy.chat_to_completion(await p.chat(legacy.completion_to_chat(body), call))
        return await p.chat(body, call)

    async def open_stream(self, req: RouteRequest) -> tuple[AsyncIterator[JSON], Served]:
        """Start a stream and wait for its first chunk, so that errors before the first
        byte surface here (where a fallback is still possible), not mid-response."""
        target = self.pick(self.candidates(req.model, req.endpoint))
        served = Served(deployment=target.deployment, model=req.model, attempts=1)
        call = CallOptions(timeouts=self.timeouts_for(target, req), headers=req.headers)
        started = time.monotonic()
        source = self._stream(target, req, call)
        try:
            async with asyncio.timeout(call.timeouts.first_token):
                first = await anext(source)
        except TimeoutError:
            await source.aclose()
            raise errors.UpstreamTimeout("the upstream sent no first token in time") from None
        except StopAsyncIteration:
            raise errors.UpstreamError("the upstream closed the stream without sending anything") from None
        except BaseException:
            await source.aclose()
            raise
        served.first_token_s = time.monotonic() - started
        return _primed(first, source, served, started, call.timeouts.total), served

    def _stream(self, target: Target, req: RouteRequest, call: CallOptions) -> AsyncIterator[JSON]:
        p = target.provider
        if req.endpoint == "completions":
            if isinstance(p, SupportsCompletions) and "completions" in target.deployment.modes:
                return p.stream_completions(req.body, call)
            return _as_completion_chunks(p.stream_chat(legacy.completion_to_chat(req.body), call))
        return p.stream_chat(req.body, call)


async def _as_completion_chunks(chunks: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
    async for chunk in chunks:
        yield legacy.chat_chunk_to_completion_chunk(chunk)


async def _primed(
    first: JSON, rest: AsyncIterator[JSON], served: Served, started: float, total_s: float | None
) -> AsyncIterator[JSON]:
    """Yield the first chunk, then the rest, bounded by the whole-request timeout."""
    try:
        yield first
        deadline = started + total_s if total_s else None
        while True:
            try:
                if deadline is None:
                    chunk = await anext(rest)
                else:
                    async with asyncio.timeout_at(asyncio.get_running_loop().time() + (deadline - time.monotonic())):
                        chunk = await anext(rest)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise errors.UpstreamTimeout("the upstream stream exceeded the request timeout") from None
            yield chunk
    finally:
        served.upstream_s = time.monotonic() - started
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()
