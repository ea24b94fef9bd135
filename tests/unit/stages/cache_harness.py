"""A pipeline of just the cache stage in front of a counting mock upstream, for the stage's tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aigw.config.models import Deployment, GatewayConfig
from aigw.pipeline.context import Completed, Principal, RequestContext, Result, Streaming
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.pipeline import Pipeline
from aigw.pipeline.stages.cache import CacheStage
from aigw.pipeline.stages.cache_build import build_stage
from aigw.providers.base import CallOptions
from aigw.providers.mock import MockProvider
from aigw.stores.cache_memory import MemoryCacheStore
from aigw.stores.semantic_memory import MemorySemanticIndex
from aigw.types import JSON
from tests.support.clock import ManualClock


class CountingUpstream:
    """The mock provider as the pipeline's terminal; counts the calls that got through."""

    def __init__(self) -> None:
        self.deployment = Deployment(name="mock", provider="mock", id="mock#0")
        self.provider = MockProvider(self.deployment)
        self.calls = 0
        self.cut_after: int | None = None  # chunks before a simulated upstream failure
        self.serve_as: str | None = None  # the model that answers (a fallback's name), None: the one asked

    async def handle(self, ctx: RequestContext) -> Result:
        self.calls += 1
        ctx.served_by, ctx.served_model = self.deployment, self.serve_as or ctx.model
        if ctx.endpoint == "embeddings":
            return Completed(await self.provider.embeddings(ctx.body, CallOptions()))
        if ctx.stream:
            return Streaming(self._stream(ctx.body))
        return Completed(await self.provider.chat(ctx.body, CallOptions()))

    async def _stream(self, body: JSON) -> AsyncIterator[JSON]:
        n = 0
        async for chunk in self.provider.stream_chat(body, CallOptions()):
            if self.cut_after is not None and n >= self.cut_after:
                raise ConnectionResetError("upstream went away")
            n += 1
            yield chunk


class FakeEmbedder:
    """Vectors by text, set by the test; unknown texts get an unrelated direction."""

    def __init__(self, dims: int = 8) -> None:
        self.vectors: dict[str, np.ndarray] = {}
        self.dims = dims
        self.calls = 0
        self.delay_s = 0.0

    def at_similarity(self, text: str, base: str, cos: float) -> None:
        """Make ``text`` have cosine ``cos`` with ``base`` (base gets axis 0)."""
        self.vectors[base] = self._axis(0)
        v = np.zeros(self.dims, dtype=np.float32)
        v[0], v[1] = cos, np.sqrt(1 - cos * cos)
        self.vectors[text] = v

    def _axis(self, i: int) -> np.ndarray:
        v = np.zeros(self.dims, dtype=np.float32)
        v[i] = 1.0
        return v

    async def embed(self, text: str) -> np.ndarray:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self.vectors.get(text, self._axis(2 + (hash(text) % (self.dims - 2))))


@dataclass
class Answer:
    ctx: RequestContext
    body: JSON | None = None
    chunks: list[JSON] = field(default_factory=list)

    @property
    def cache(self) -> str | None:
        value: str | None = self.ctx.response_headers.get("x-aigw-cache")
        return value

    @property
    def text(self) -> str:
        if self.body is not None:
            return str(self.body["choices"][0]["message"]["content"])
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in self.chunks if c.get("choices"))


class Harness:
    def __init__(self, cache: dict[str, Any], *, routing: dict[str, Any] | None = None,
                 stores: dict[str, Any] | None = None, embedder: FakeEmbedder | None = None,
                 purge_log: Any = None, more_embedders: dict[str, FakeEmbedder] | None = None,
                 indexes: dict[str, Any] | None = None) -> None:
        self.clock = ManualClock(1_000_000.0)
        config = GatewayConfig.model_validate({"cache": cache, "routing": routing or {},
                                               "models": [{"name": "mock", "provider": "mock"},
                                                          {"name": "other", "provider": "mock"}]})
        self.embedder = embedder or FakeEmbedder()
        self.memory = MemoryCacheStore(1000, 10_000_000, self.clock)
        services: dict[str, Any] = {
            "cache_stores": stores if stores is not None else {"memory": self.memory},
            "cache_indexes": indexes if indexes is not None else {"memory": MemorySemanticIndex(1000, 100, self.clock)},
            "cache_embedders": {"fake-embed": self.embedder, **(more_embedders or {})},
            "cache_purge_log": purge_log,
        }
        self.deps = StageDeps(config=config, clock=self.clock, services=services)
        stage = build_stage(self.deps)
        assert isinstance(stage, CacheStage)
        self.stage = stage
        self.upstream = CountingUpstream()
        self.pipeline = Pipeline([stage], self.upstream)

    async def ask(self, text: str = "What is the capital of France?", *, model: str = "mock",
                  tenant: str = "t1", key: str = "k1", stream: bool = False, headers: dict[str, str] | None = None,
                  extra: JSON | None = None, messages: list[JSON] | None = None,
                  principal_extra: JSON | None = None, endpoint: str = "chat") -> Answer:
        body: JSON = {"model": model, "messages": messages or [{"role": "user", "content": text}], **(extra or {})}
        if endpoint == "embeddings":
            body = {"model": model, "input": text, **(extra or {})}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        ctx = RequestContext(request_id="r", api="openai", endpoint=endpoint, body=body, model=model, stream=stream,
                             principal=Principal(key_id=key, tenant_id=tenant, extra=principal_extra or {}),
                             headers=headers or {})
        result = await self.pipeline.run(ctx)
        answer = Answer(ctx)
        if isinstance(result, Completed):
            answer.body = result.body
        else:
            try:
                async for chunk in result.chunks:
                    answer.chunks.append(chunk)
            except Exception as exc:
                ctx.error = exc  # type: ignore[assignment]
        await self.stage.flush()
        await self.pipeline.finish(ctx)
        return answer
