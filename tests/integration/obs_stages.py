"""Two tiny stages for the observability tests: a limiter that says no and a cache that answers.

They stand in for the real limits and cache stages (other issues) so the tests can
show what the metrics, logs and request log make of a rejection and a cache hit.
Registered per test with ``monkeypatch.setitem(STAGES, ...)``.
"""

from __future__ import annotations

from aigw import errors
from aigw.pipeline.context import Completed, RequestContext, Result
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.stage import Stage

DENY = "x-test-deny"
CACHED = "x-test-cached"


class Deny(Stage):
    name = "test_deny"

    async def on_request(self, ctx: RequestContext) -> Result | None:
        if DENY in ctx.headers:
            raise errors.RateLimited("Rate limit for this key reached.", retry_after=3)
        return None


class Cache(Stage):
    name = "test_cache"

    def __init__(self, deps: StageDeps) -> None:
        self.metrics = deps.services.get("metrics")

    async def on_request(self, ctx: RequestContext) -> Result | None:
        hit = CACHED in ctx.headers
        if self.metrics is not None:
            self.metrics.cache_lookup(ctx.model, "hit" if hit else "miss")
        if not hit:
            return None
        ctx.handled_by = "cache"
        ctx.usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        return Completed({"id": "chatcmpl-cached", "object": "chat.completion", "created": 0, "model": ctx.model,
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": "cached"},
                                       "finish_reason": "stop"}], "usage": ctx.usage})


def build_deny(deps: StageDeps) -> Stage:
    return Deny()


def build_cache(deps: StageDeps) -> Stage:
    return Cache(deps)
