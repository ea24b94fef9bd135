"""Runs the ordered stages around the router: pre-hooks in order, post-hooks reversed.

Which post-hooks follow an answer depends only on which stage gave it, so the
lists are worked out once here, not per request. Two kinds of answer may skip
work on the way out (a cache hit gives both; see ``context.py``): ``Prerendered``,
whose body is already serialized, and ``Replay``, a stream whose every chunk is
known now.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from aigw.pipeline.context import Completed, Replay, RequestContext, Result, Streaming
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
        n = len(self.stages)
        self._pre = [(i, s) for i, s in enumerate(self.stages) if overrides(s, "on_request")]
        self._finish = [s for s in self.stages if overrides(s, "on_finish")]
        self.finishes = bool(self._finish)  # False: ``finish`` has nothing to do (callers may skip it)
        # post-hooks of the stages before position i (i = n: every stage; the terminal answered), reversed
        self._on_response = [[s for s in reversed(self.stages[:i]) if overrides(s, "on_response")]
                             for i in range(n + 1)]
        self._on_stream = [[s for s in reversed(self.stages[:i]) if overrides(s, "on_stream")]
                           for i in range(n + 1)]

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    async def run(self, ctx: RequestContext) -> Result:
        ran = len(self.stages)
        result: Result | None = None
        for i, stage in self._pre:
            result = await stage.on_request(ctx)
            if result is not None:
                ran = i
                break
        if result is None:
            result = await self.terminal.handle(ctx)
        if isinstance(result, Completed):
            hooks = self._on_response[ran]
            if not hooks:
                return result  # as it came: a Prerendered answer stays sendable as is
            body: JSON = result.body
            for stage in hooks:
                body = await stage.on_response(ctx, body)
            return Completed(body)
        chunks: AsyncIterator[JSON] = result.chunks
        for stage in self._on_stream[ran]:
            chunks = stage.on_stream(ctx, chunks)
        return Replay(chunks) if isinstance(result, Replay) else Streaming(chunks)

    async def finish(self, ctx: RequestContext) -> None:
        """Called exactly once per request after the answer went out (or failed)."""
        for stage in self._finish:
            try:
                await stage.on_finish(ctx)
            except Exception:  # accounting must never break the response
                log.exception("stage %s failed in on_finish", stage.name, extra=ctx.log_ids())
