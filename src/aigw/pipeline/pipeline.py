"""Runs the ordered stages around the router: pre-hooks in order, post-hooks reversed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from aigw.pipeline.context import Completed, RequestContext, Result, Streaming
from aigw.pipeline.stage import Stage, overrides
from aigw.types import JSON

log = logging.getLogger("aigw.pipeline")


class Terminal(Protocol):
    """What answers when no stage did: the route terminal (router)."""

    async def handle(self, ctx: RequestContext) -> Result: ...


class Pipeline:
    def __init__(self, stages: Sequence[Stage], terminal: Terminal) -> None:
        self.stages = list(stages)
        self.terminal = terminal
        self._pre = [s for s in self.stages if overrides(s, "on_request")]
        self._finish = [s for s in self.stages if overrides(s, "on_finish")]

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    async def run(self, ctx: RequestContext) -> Result:
        ran: list[Stage] = self.stages
        result: Result | None = None
        for stage in self._pre:
            result = await stage.on_request(ctx)
            if result is not None:
                ran = self.stages[: self.stages.index(stage)]
                break
        if result is None:
            result = await self.terminal.handle(ctx)
        if isinstance(result, Completed):
            body: JSON = result.body
            for stage in reversed(ran):
                if overrides(stage, "on_response"):
                    body = await stage.on_response(ctx, body)
            return Completed(body)
        chunks: AsyncIterator[JSON] = result.chunks
        for stage in reversed(ran):
            if overrides(stage, "on_stream"):
                chunks = stage.on_stream(ctx, chunks)
        return Streaming(chunks)

    async def finish(self, ctx: RequestContext) -> None:
        """Called exactly once per request after the answer went out (or failed)."""
        for stage in self._finish:
            try:
                await stage.on_finish(ctx)
            except Exception:  # accounting must never break the response
                log.exception("stage %s failed in on_finish", stage.name)
