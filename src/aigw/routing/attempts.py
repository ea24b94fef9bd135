"""One attempt on one deployment: call it within its timeouts and write down how it went.

``complete`` returns a whole answer; ``open_stream`` waits for the first chunk with
content (``streams.first_content``: so a failure before the first byte is still an
exception the router can retry or fall back from) and returns a stream that records
its outcome when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from aigw import errors
from aigw.config.models import Deployment
from aigw.providers.base import CallOptions, Provider, SupportsCompletions, SupportsEmbeddings, Timeouts
from aigw.routing.book import HealthBook
from aigw.routing.retry import outcome_of, unfit
from aigw.routing.state import DeploymentState, Outcome
from aigw.routing.streams import OK, aclose_quietly, first_content, park, primed, tokens_of
from aigw.schema import legacy
from aigw.types import JSON

log = logging.getLogger("aigw.routing")
DEFAULT_CONNECT_S = 10.0

Endpoint = str  # "chat" | "completions" | "embeddings"
# Told of every attempt as it ends: (public model, provider, deployment id, outcome, seconds). The outcome is
# "ok", the error kind the attempt ended with, or "cancelled" (the caller left): each attempt counts against
# the deployment that ran it, not the one that finally answered.
AttemptHook = Callable[[str, str, str, str, float], None]


@dataclass(slots=True)
class Target:
    """A deployment with its built provider adapter."""

    deployment: Deployment
    provider: Provider


class DeploymentGate(Protocol):
    """Exact per-deployment caps, asked before each call to a capped deployment (``pipeline.deployment_caps``)."""

    async def admit(self, deployment_id: str) -> float | None:
        """None: go ahead (taken, or not this gate's to check); else the seconds until it has room."""
        ...


@dataclass(slots=True)
class RouteRequest:
    model: str
    body: JSON
    endpoint: Endpoint = "chat"
    deadline_s: float | None = None  # the client's own whole-request limit
    headers: dict[str, str] = field(default_factory=dict)  # forwarded upstream (traceparent, request id)
    allowed: frozenset[str] | None = None  # models the caller's key may use (None: any): fallbacks outside are skipped
    caps: DeploymentGate | None = None  # exact deployment caps (else the router's own per-replica estimate)
    served: Served | None = None  # set by the router as it starts: what was tried, readable when it raises too


@dataclass(slots=True)
class Served:
    """What happened on the way: which deployment answered, after how many tries."""

    deployment: Deployment | None = None
    model: str = ""  # public model that answered (differs from the asked one after a fallback)
    attempts: int = 0  # upstream calls made
    retries: int = 0  # attempts after the first on the same model
    fallbacks: list[str] = field(default_factory=list)  # models moved to, in order
    upstream_s: float = 0.0
    first_token_s: float | None = None
    # deployments of calls that reached their upstream and ended without an answer (it answered 200 and broke
    # off, the connection broke after the request was sent, a timeout or the caller's leaving ended it after the
    # request was sent: ``CallOptions.sent``): each may bill its prompt. None until there is one, so an
    # ordinary request allocates nothing for it
    cut: list[Deployment] | None = None

    def cut_short(self, deployment: Deployment) -> None:
        if self.cut is None:
            self.cut = []
        self.cut.append(deployment)


@dataclass(slots=True)
class Slot:
    """A target and what the router knows of it."""

    target: Target
    state: DeploymentState
    _timeouts: dict[tuple[float, float | None, float | None], Timeouts] = field(default_factory=dict)

    def timeouts(self, remaining: float, first_token_s: float | None, chunk_s: float | None = None) -> Timeouts:
        """``timeouts_for``, remembered: the values repeat, so adapters can cache by them too."""
        key = (_coarse(remaining), first_token_s, chunk_s)
        t = self._timeouts.get(key)
        if t is None:
            if len(self._timeouts) > 512:
                self._timeouts.clear()
            t = self._timeouts[key] = timeouts_for(self.target.deployment, key[0], first_token_s, chunk_s)
        return t


def _coarse(remaining: float) -> float:
    """Round a remaining time down (whole seconds past 10 s, tenths past 1 s): few distinct values."""
    if remaining > 10.0:
        return float(math.floor(remaining))
    if remaining > 1.0:
        return math.floor(remaining * 10) / 10
    return max(remaining, 0.001)


def timeouts_for(d: Deployment, remaining: float, first_token_s: float | None,
                 chunk_s: float | None = None) -> Timeouts:
    """Per attempt: the deployment's own limits and the model's (the smaller of each), never past the
    request's deadline."""
    total = min(d.timeout_s or math.inf, remaining)
    limits = [x for x in (d.first_token_timeout_s, first_token_s) if x]
    first = min(min(limits), total) if limits else total
    chunk_limits = [x for x in (d.chunk_timeout_s, chunk_s) if x]
    return Timeouts(connect=min(d.connect_timeout_s or DEFAULT_CONNECT_S, total), first_token=first, total=total,
                    chunk=min(chunk_limits) if chunk_limits else None)


async def call_endpoint(target: Target, req: RouteRequest, call: CallOptions) -> JSON:
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


def stream_endpoint(target: Target, req: RouteRequest, call: CallOptions) -> AsyncIterator[JSON]:
    p = target.provider
    if req.endpoint == "completions":
        if isinstance(p, SupportsCompletions) and "completions" in target.deployment.modes:
            return p.stream_completions(req.body, call)
        return _as_completion_chunks(p.stream_chat(legacy.completion_to_chat(req.body), call))
    return p.stream_chat(req.body, call)


async def _as_completion_chunks(chunks: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
    async for chunk in chunks:
        yield legacy.chat_chunk_to_completion_chunk(chunk)


def _unexpected(exc: Exception, s: DeploymentState) -> errors.GatewayError:
    log.exception("deployment %s raised an unexpected %s", s.id, type(exc).__name__)
    return errors.UpstreamError(f"upstream call failed ({type(exc).__name__})")


class Attempts:
    """Runs attempts and feeds their outcomes to the book."""

    def __init__(self, book: HealthBook) -> None:
        self.book = book
        self.clock = book.clock
        self.on_attempt: AttemptHook | None = None

    def _ended(self, d: Deployment, outcome: Outcome | None, seconds: float) -> None:
        if self.on_attempt is not None:
            self.on_attempt(d.name, d.provider, d.id, outcome_name(outcome), seconds)

    async def complete(self, slot: Slot, req: RouteRequest, served: Served, call: CallOptions,
                       trial: bool, theirs: bool = False) -> JSON:
        """``theirs``: the call's time is cut to the client's own deadline (``_clients_timeout``)."""
        s, clock = slot.state, self.clock
        s.started()
        start = clock.monotonic()
        began = asyncio.get_running_loop().time()
        outcome: Outcome | None = None
        excused = refused = False
        try:
            async with asyncio.timeout(call.timeouts.total):
                body = await call_endpoint(slot.target, req, call)
            outcome = OK
        except BaseException as exc:  # a timeout, an error, a bug, or the caller gone (``_call_error``)
            err = _call_error(exc, call, s)
            refused = err is not None and unfit(err, call.sent)  # no upstream call: nothing to write down
            outcome = None if err is None or refused else outcome_of(err)
            excused = theirs and _clients_timeout(err, began, call.timeouts.total)
            if _took(exc, err, call):  # the upstream had the request: it may work on it, and bill it
                served.cut_short(s.deployment)
            if err is None or err is exc:
                raise
            raise err from (None if isinstance(exc, TimeoutError) else exc)
        finally:
            s.ended()
            elapsed = clock.monotonic() - start
            served.upstream_s += elapsed
            if outcome is OK or (outcome is not None and outcome.kind == "timeout"):
                s.sample_latency(elapsed)  # a timeout too: lowest_latency must not keep choosing one that hangs
            self.book.record(s, None if excused else outcome, trial)
            if not refused:
                self._ended(s.deployment, outcome, elapsed)
        if s.deployment.tpm is not None:
            s.add_tokens(tokens_of(body.get("usage")))
        served.deployment = slot.target.deployment
        return body

    async def open_stream(self, slot: Slot, req: RouteRequest, served: Served, call: CallOptions,
                          trial: bool, theirs: bool = False) -> AsyncIterator[JSON]:
        """``theirs``: the call's time is cut to the client's own deadline (``_clients_timeout``)."""
        s, clock = slot.state, self.clock
        s.started()
        start = clock.monotonic()
        began = asyncio.get_running_loop().time()
        end = began + (call.timeouts.total or math.inf)  # the attempt's whole time
        source: AsyncIterator[JSON] | None = None
        try:
            source = stream_endpoint(slot.target, req, call)  # an adapter may shape the body (and refuse) here
            async with asyncio.timeout(call.timeouts.first_token):
                head = await first_content(source)
        except BaseException as exc:
            err = _call_error(exc, call, s, first_chunk=True)
            if _took(exc, err, call):
                served.cut_short(s.deployment)  # taken by the upstream: it may bill the prompt
            if source is not None:
                await aclose_quietly(source)
            s.ended()
            waited = clock.monotonic() - start
            served.upstream_s += waited
            if err is not None and err.kind == "timeout":
                s.sample_ttft(waited)  # no first token in time: lowest_latency must not keep choosing it
            refused = err is not None and unfit(err, call.sent)  # no upstream call: nothing to write down
            failed = None if err is None or refused else outcome_of(err)
            wait = call.timeouts.first_token  # cut to the client's deadline only when it is the whole time
            excused = theirs and wait == call.timeouts.total and _clients_timeout(err, began, wait)
            self.book.record(s, None if excused else failed, trial)
            if not refused:
                self._ended(s.deployment, failed, waited)
            if err is None or err is exc:
                raise
            raise err from None
        ttft = clock.monotonic() - start
        s.sample_ttft(ttft)
        served.first_token_s = ttft
        served.deployment = slot.target.deployment
        if trial:  # the upstream answered: a long stream must not hold the half-open trial until its last chunk
            self.book.record(s, OK, True)

        def finish(outcome: Outcome | None, tokens: int) -> None:
            s.ended()
            took = clock.monotonic() - start
            served.upstream_s += took
            if tokens:
                s.add_tokens(tokens)
            excused = theirs and _clients_timeout(outcome, began, call.timeouts.total)
            if not (trial and outcome is OK):  # a trial's success is recorded already; a later failure counts
                self.book.record(s, None if excused else outcome, False)
            self._ended(s.deployment, outcome, took)

        mine = slot.target.deployment.timeout_s  # the deployment's own limit ends the stream, not the request's
        attempt_s = mine if mine is not None and (call.timeouts.total or math.inf) >= mine else None
        return await park(primed(head, source, end, finish, call.timeouts.chunk, attempt_s))


def outcome_name(outcome: Outcome | None) -> str:
    """An attempt's outcome as one word: ok, the error kind, or cancelled (``None``: the caller left)."""
    if outcome is None:
        return "cancelled"
    return outcome.kind or "ok"


_SLACK_S = 0.001  # a timer may fire this much before its time (the loop's clock resolution, rounding)


def _clients_timeout(err: errors.GatewayError | Outcome | None, began: float, limit: float | None) -> bool:
    """Whether a call whose time was cut to the client's own deadline ended by running out of it: a timeout
    after all of ``limit`` (loop time since ``began``), not an earlier one of the operator's (connect) or the
    upstream's (a 504). That is the client's choice, like a client that left: it says nothing of the upstream."""
    return (err is not None and err.kind == "timeout" and limit is not None
            and asyncio.get_running_loop().time() >= began + limit - _SLACK_S)


def _took(exc: BaseException, err: errors.GatewayError | None, call: CallOptions) -> bool:
    """Whether the upstream had taken the call ``exc`` ended: the adapter says so on its own errors; after our
    timers, the caller's leaving or a bug, the request having been written says so (``CallOptions.sent``)."""
    if isinstance(exc, errors.GatewayError):
        return exc.reached_upstream
    return call.billable or (err is not None and err.reached_upstream)


def _call_error(exc: BaseException, call: CallOptions, s: DeploymentState,
                first_chunk: bool = False) -> errors.GatewayError | None:
    """The error a failed attempt stands for (a plain call's, or a stream's before its first chunk); None when
    we were cancelled (the caller left)."""
    if isinstance(exc, TimeoutError):
        if first_chunk:
            return errors.UpstreamTimeout(f"the upstream sent no first token within {call.timeouts.first_token:g} s")
        return errors.UpstreamTimeout(f"the upstream did not answer within {call.timeouts.total:g} s")
    if isinstance(exc, StopAsyncIteration):  # after its 200: the upstream took the call
        err = errors.UpstreamError("the upstream closed the stream without sending anything")
        err.reached_upstream = True
        return err
    if isinstance(exc, errors.GatewayError):
        return exc
    if isinstance(exc, Exception):
        return _unexpected(exc, s)
    return None


