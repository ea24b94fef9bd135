"""The Stage contract. Pre-hooks run in config order, post-hooks in reverse.

A stage may answer the request itself (return a Result from ``on_request``),
reject it (raise a GatewayError), change it (assign a new ``ctx.body``, never
edit the parsed one in place: what is memoised on the request's bytes, such as
the cache key, relies on ``ctx.body is ctx.source[1]`` meaning "unchanged") or
pass it on (return None). Hooks a stage does not override cost nothing: the pipeline only
calls the ones a stage defines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aigw.pipeline.context import RequestContext, Result
from aigw.types import JSON


class Stage:
    name = "stage"

    async def on_request(self, ctx: RequestContext) -> Result | None:
        return None

    async def on_response(self, ctx: RequestContext, body: JSON) -> JSON:
        return body

    def on_stream(self, ctx: RequestContext, chunks: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
        return chunks

    async def on_finish(self, ctx: RequestContext) -> None:
        """Always called once the answer is delivered (or failed): accounting, logs."""
        return None


def overrides(stage: Stage, hook: str) -> bool:
    return getattr(type(stage), hook) is not getattr(Stage, hook)
