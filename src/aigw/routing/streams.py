"""A primed stream: its first chunk with content already in hand, the rest bounded by the attempt's deadline
and, when one is set, by the longest wait for each next chunk (``chunk_timeout_s``).

The opening chunks that say nothing yet (the role and an empty text: OpenAI's first chunk, Anthropic's
``message_start``, sent before the model's first token) are held with it, so that a failure right after
them (Anthropic's ``overloaded_error`` event) still falls back, and a first-token limit waits for a token.

One timer per stream, not one per chunk: the timer only cancels the consumer while it
waits on the upstream, and a chunk costs two attribute writes instead of a timeout
context (several microseconds each). With a chunk limit, a wait also notes when it
began (one clock read), and the timer, when it fires early, moves itself to the end
of the current wait instead of being rescheduled at every chunk.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from aigw import errors
from aigw.routing.retry import outcome_of
from aigw.routing.state import Outcome
from aigw.types import JSON

log = logging.getLogger("aigw.routing")
OK = Outcome(ok=True, failure=False)
HEAD_MAX = 8  # opening chunks without content held at most before the stream is handed on anyway


def tokens_of(usage: Any) -> int:
    if isinstance(usage, dict):
        total = usage.get("total_tokens")
        if isinstance(total, int):
            return total
    return 0


def says_nothing(chunk: JSON) -> bool:
    """A chunk with nothing for the client yet: only a role, empty text, no finish, no usage."""
    choices = chunk.get("choices")
    if not choices or not isinstance(choices, list) or chunk.get("usage"):
        return False
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("finish_reason"):
            return False
        delta = choice.get("delta")
        if delta is None and choice.get("text") == "":  # a legacy completion's (one made of a chat stream's)
            continue
        if not isinstance(delta, dict):  # a shape we do not know: take it for content
            return False
        for key, value in delta.items():
            if key != "role" and value is not None and value != "":
                return False
    return True


async def first_content(source: AsyncIterator[JSON]) -> list[JSON]:
    """The stream's first chunk with content, after the opening ones that say nothing (at most ``HEAD_MAX``
    in all); fewer when the stream ends before any content (an empty answer)."""
    head = [await anext(source)]
    while len(head) < HEAD_MAX and says_nothing(head[-1]):
        try:
            head.append(await anext(source))
        except StopAsyncIteration:
            break
    return head


async def aclose_quietly(source: AsyncIterator[JSON]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a broken upstream stream must not hide the real error
            log.debug("closing a failed stream raised", exc_info=True)


class _Deadline:
    """Cancels the consuming task if it is still waiting on the upstream at ``end`` (loop time), or, with
    ``chunk`` seconds set, once one wait for a next chunk has lasted that long (``stalled``)."""

    __slots__ = ("attempt_s", "chunk", "end", "fired", "handle", "loop", "since", "stalled", "task", "waiting")

    def __init__(self, end: float, chunk: float | None = None, attempt_s: float | None = None) -> None:
        self.attempt_s = attempt_s  # set when ``end`` is the deployment's own timeout_s, not the request's
        self.fired = False
        self.stalled = False
        self.waiting = False
        self.task: asyncio.Task[Any] | None = None
        self.end = end
        self.chunk = chunk
        self.loop = asyncio.get_running_loop()
        self.since = self.loop.time()  # when the current (or the last) wait for a chunk began
        self.handle: asyncio.TimerHandle | None = None
        self._arm(self.since)

    def _arm(self, now: float) -> None:
        at = self.end if self.chunk is None else min(self.end, max(self.since, now) + self.chunk)
        self.handle = self.loop.call_at(at, self._fire) if at < math.inf else None

    def _fire(self) -> None:
        if self.chunk is None:
            self.fired = True
        else:
            now = self.loop.time() + _EARLY_S
            if now >= self.end:
                self.fired = True
            elif self.waiting and now >= self.since + self.chunk:
                self.stalled = True
            else:  # the chunks kept coming: the limit now runs from the current wait's start
                self._arm(now)
                return
        if self.waiting and self.task is not None:
            self.task.cancel()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


_EARLY_S = 0.001  # a timer may fire this much before its time (the loop's clock resolution)


async def park(stream: AsyncGenerator[JSON | None, None]) -> AsyncIterator[JSON]:
    """Run ``primed`` to its parking step, so that its ``finally`` runs however the consumer ends."""
    await anext(stream)
    return stream  # type: ignore[return-value]  # past the parking step it yields chunks only


async def primed(
    head: list[JSON], rest: AsyncIterator[JSON], end: float, finish: Callable[[Outcome | None, int], None],
    chunk_s: float | None = None, attempt_s: float | None = None,
) -> AsyncGenerator[JSON | None, None]:
    """Yield the chunks in hand (``first_content``), then the rest until ``end``, each within ``chunk_s`` of
    asking for it when that is set (``attempt_s``: ``end`` is the deployment's ``timeout_s``, the error says
    so); tell ``finish`` how it ended (``None`` when the consumer went away: that
    says nothing about the upstream).

    Call ``park`` on it before handing it on: an async generator closed (or dropped) before its first
    step never runs its ``finally``, which would leave the call in flight and a half-open trial taken."""
    outcome: Outcome | None = None
    tokens = 0
    for held in head:
        tokens = tokens_of(held.get("usage")) or tokens
    deadline = _Deadline(end, chunk_s, attempt_s)
    try:
        yield None  # parked by ``park``: from here on, closing the stream runs ``finish``
        for held in head:
            yield held
        while True:
            chunk = await _next(rest, deadline)
            if chunk is None:
                outcome = OK
                return
            if "usage" in chunk:
                tokens = tokens_of(chunk["usage"]) or tokens
            yield chunk
    except errors.GatewayError as exc:
        outcome = outcome_of(exc)
        raise
    except Exception as exc:  # a chunk no adapter could translate, a failure none mapped: not the caller leaving
        log.exception("an upstream stream raised an unexpected %s", type(exc).__name__)
        broken = errors.UpstreamError(f"upstream stream failed ({type(exc).__name__})")
        outcome = outcome_of(broken)
        raise broken from exc
    finally:
        deadline.close()
        finish(outcome, tokens)
        await aclose_quietly(rest)


async def _next(rest: AsyncIterator[JSON], deadline: _Deadline) -> JSON | None:
    """The next chunk, None at the end; an UpstreamTimeout once the deadline has passed or the chunk is late."""
    if deadline.fired:
        raise _ran_out(deadline)
    task = deadline.task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0
    if deadline.chunk is not None:
        deadline.since = deadline.loop.time()
    deadline.waiting = True
    try:
        return await anext(rest)
    except StopAsyncIteration:
        return None
    except asyncio.CancelledError:
        if (deadline.fired or deadline.stalled) and task is not None and task.uncancel() <= cancelling:
            if deadline.fired:
                raise _ran_out(deadline) from None
            raise errors.UpstreamTimeout(
                f"the upstream sent nothing for {deadline.chunk:g} s in the middle of the stream "
                "(chunk_timeout_s)") from None
        raise
    finally:
        deadline.waiting = False


def _ran_out(deadline: _Deadline) -> errors.UpstreamTimeout:
    """The stream's whole time is up: the deployment's ``timeout_s`` (per attempt) or the request's timeout."""
    if deadline.attempt_s is not None:
        return errors.UpstreamTimeout(f"the upstream stream ran past its deployment's {deadline.attempt_s:g} s "
                                      "timeout_s (a whole stream, per attempt)")
    return errors.UpstreamTimeout("the upstream stream ran past the request's timeout")
