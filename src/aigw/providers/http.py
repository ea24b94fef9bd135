"""The one place that opens upstream HTTP connections.

One pooled ``aiohttp.ClientSession`` per upstream origin, shared by every
deployment that points there. Also: an SSE reader that yields events as they
arrive, and the mapping from HTTP status codes to the gateway's error kinds,
which each provider refines with its own error bodies.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.payload import BytesPayload

from aigw import errors
from aigw.durations import parse_go_duration
from aigw.providers.base import CallOptions, Timeouts


class HttpClients:
    """Owns one ClientSession per origin; closed once at shutdown."""

    def __init__(self, limit_per_host: int = 512) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._limit_per_host = limit_per_host

    def session_for(self, url: str) -> aiohttp.ClientSession:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        session = self._sessions.get(origin)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=self._limit_per_host, ttl_dns_cache=300, keepalive_timeout=60
            )
            session = aiohttp.ClientSession(
                connector=connector,
                json_serialize=lambda o: orjson.dumps(o).decode(),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
            self._sessions[origin] = session
        return session

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


def client_timeout(t: Timeouts) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=t.total, connect=t.connect, sock_connect=t.connect)


class _SentBody(BytesPayload):
    """A request body that notes on its call when aiohttp has written it to the connection."""

    def __init__(self, data: bytes, call: CallOptions) -> None:
        super().__init__(data, content_type="application/json")
        self._call = call

    async def write(self, writer: Any) -> None:  # aiohttp < 3.12
        await super().write(writer)
        self._call.sent = True

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        await super().write_with_length(writer, content_length)
        self._call.sent = True


def sent_body(data: bytes, call: CallOptions) -> aiohttp.Payload:
    """``data`` as a POST body that sets ``call.sent`` once it is written to an open connection.

    Why there: aiohttp writes the body only after the connection is made (or taken from the pool) and the
    request head written, so the flag tells a call that reached its upstream (which may now be working on it,
    and bill it, whatever ends the call: a total, first-token or request timeout, a cut, the caller gone) from
    one that never did (refused, or still connecting when a connect timeout or the caller's leaving ended it).
    aiohttp's own exceptions cannot tell these apart: its total timeout and the router's timers cancel
    whatever phase they hit. It costs nothing on the hot path: aiohttp wraps bytes in a ``BytesPayload``
    anyway; this one sets one attribute after writing.
    """
    return _SentBody(data, call)


@dataclass(slots=True)
class SseEvent:
    event: str | None
    data: str


MAX_SSE_LINE_BYTES = 64 * 1024 * 1024  # one stream line; a base64 image in one event is a few MB


async def iter_sse(
    response: aiohttp.ClientResponse, first_event_timeout: float | None = None
) -> AsyncIterator[SseEvent]:
    """Yield server-sent events as they arrive (spec: blank line ends an event).

    ``first_event_timeout`` bounds the wait for the first event (time to first token), as one deadline:
    comments (keep-alives, OpenRouter's ``: OPENROUTER PROCESSING``) and partial lines do not restart it.
    Lines are cut from
    whatever the connection has (``readany``), not read one by one with ``readline``: that failed on any
    line over 512 KiB (aiohttp's bound; an image or a whole answer sent as one event) and copies a long
    line once per read. Up to ``MAX_SSE_LINE_BYTES`` a line; an upstream that sends more is an error.
    """
    event: str | None = None
    data_lines: list[str] = []
    content = response.content
    first = first_event_timeout is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + first_event_timeout if first_event_timeout is not None else 0.0
    head: list[bytes] = []  # the start of a line whose end has not come yet
    head_size = 0
    while True:
        if first:
            try:
                block = await asyncio.wait_for(content.readany(), max(0.0, deadline - loop.time()))
            except TimeoutError as exc:  # after the 200: the upstream took the call (it may bill the prompt)
                raise reached(errors.UpstreamTimeout("upstream sent no first token in time")) from exc
        else:
            block = await content.readany()
        if not block:  # the end of the body: a last line without its newline still counts
            lines, head = [b"".join(head)] if head else [], []
        else:
            lines = block.split(b"\n")
            if head:
                lines[0] = b"".join(head) + lines[0]
                head, head_size = [], 0
            if tail := lines.pop():  # not ended yet
                head.append(tail)
                head_size += len(tail)
                if head_size > MAX_SSE_LINE_BYTES:
                    raise reached(errors.UpstreamError(
                        f"upstream sent a stream line over {MAX_SSE_LINE_BYTES} bytes"))
        for raw in lines:
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            if not line:
                if data_lines or event is not None:
                    first = False
                    yield SseEvent(event, "\n".join(data_lines))
                event, data_lines = None, []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                data_lines.append(value)
            elif name == "event":
                event = value
        if not block:
            if data_lines:
                yield SseEvent(event, "\n".join(data_lines))
            return


def parse_json_event(data: str) -> dict[str, Any]:
    """A stream event's JSON object. Events come after the stream's 200: an event that is not one is an error
    of a call the upstream took (``reached``), so its prompt is billed (docs/tenancy.md, a 200 whose body is
    neither an answer nor an error)."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise reached(errors.UpstreamError("upstream sent a stream event that is not JSON")) from exc
    if not isinstance(parsed, dict):
        raise reached(errors.UpstreamError("upstream sent a stream event that is not a JSON object"))
    return parsed


def parse_retry_after(headers: Any) -> float | None:
    """Retry-After in seconds (delta form, or an HTTP date, RFC 9110), or the OpenAI-style ms header. A value that
    is not a finite number ("inf", "1e999", "nan") says nothing: it would reach the client as a Retry-After we
    cannot write."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            ms = float(value)
            if math.isfinite(ms):
                return max(0.0, ms / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            seconds = float(value)
        except ValueError:
            return _seconds_until_date(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    return _limit_reset(headers)


def _limit_reset(headers: Any) -> float | None:
    """When the limit a 429 hit frees, from OpenAI's ``x-ratelimit-reset-requests`` / ``-tokens`` (Go durations):
    the one whose ``remaining`` is 0 (any answer carries these: a limit with room left says nothing of a wait)."""
    waits = []
    for kind in ("requests", "tokens"):
        if headers.get(f"x-ratelimit-remaining-{kind}") == "0" and (raw := headers.get(f"x-ratelimit-reset-{kind}")):
            seconds = parse_go_duration(raw)
            if seconds is not None:
                waits.append(seconds)
    return max(waits) if waits else None


def _seconds_until_date(value: str) -> float | None:
    """Seconds from now until an HTTP-date Retry-After (``Wed, 21 Oct 2026 07:28:00 GMT``); None if not one."""
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - time.time())


def error_for_status(
    status: int, message: str, *, retry_after: float | None = None, detail: str | None = None
) -> errors.GatewayError:
    """Map an upstream HTTP status to the gateway's kind (providers refine by body)."""
    cls: type[errors.GatewayError]
    if status == 400 or status == 422:
        cls = errors.InvalidRequest
    elif status in (401, 403):
        cls = errors.AuthError
    elif status == 402:  # the upstream account cannot pay: retrying that deployment cannot help
        cls = errors.QuotaExceeded
    elif status == 404:
        cls = errors.NotFound
    elif status == 408:
        cls = errors.UpstreamTimeout
    elif status == 413:
        cls = errors.InvalidRequest
    elif status == 429:
        cls = errors.RateLimited
    elif status in (503, 529):
        cls = errors.Unavailable
    elif status == 504:
        cls = errors.UpstreamTimeout
    else:
        cls = errors.UpstreamError
    err = cls(message, retry_after=retry_after, detail=detail)
    if cls in (errors.AuthError,):
        # Our client sees 401 from *us* only for its own key; an upstream auth
        # failure is the operator's problem, reported as 502-class upstream auth.
        err.status = 502  # type: ignore[misc]
        err.code = "upstream_auth"
    return err


async def read_error_body(response: aiohttp.ClientResponse, call: CallOptions,
                          limit: int = 64 * 1024) -> tuple[str, Any]:
    """Return (raw text, parsed JSON or None) of an upstream error body; the call is marked refused first
    (``CallOptions.refused``): however the read ends, the upstream bills nothing for it."""
    call.refused = True
    try:
        raw = await response.content.read(limit)
    except (TimeoutError, aiohttp.ClientError):
        return "", None
    text = raw.decode("utf-8", errors="replace")
    try:
        return text, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return text, None


def transport_error(exc: BaseException) -> errors.GatewayError:
    """Map a client-side exception (timeouts, resets, refusals) to a kind."""
    if isinstance(exc, errors.GatewayError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, aiohttp.ServerTimeoutError)):
        return errors.UpstreamTimeout("upstream did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return errors.Unavailable("could not connect to the upstream")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):  # billed or not: ``took_call``
        return errors.UpstreamError("upstream closed the connection before the response was complete")
    if isinstance(exc, aiohttp.ClientError):
        return errors.UpstreamError(f"upstream connection failed: {type(exc).__name__}")
    return errors.UpstreamError(f"upstream call failed: {type(exc).__name__}")


def took_call(exc: BaseException, call: CallOptions, answered: bool) -> bool:
    """Whether the upstream took a call that ``exc`` ended, so that it may bill the prompt: its answer had begun
    (``answered``: a status line came), or the request was sent (``call.sent``) and a timeout ended the call
    while the upstream worked on it. A connection closed before any answer is not taken, sent or not: an
    upstream or a proxy may hang up without reading the request (a pooled keep-alive connection closed as it is
    reused, load shed), and the router retries the call; billing it would bill a call that may never have
    run, and bill it again when the retry answers. An error status is no answer (``CallOptions.refused``)."""
    return (answered or (call.sent and isinstance(exc, TimeoutError))) and not call.refused


def reached(err: errors.GatewayError, took: bool = True) -> errors.GatewayError:
    """``err``, marked ``reached_upstream`` when ``took``: the upstream took the call (it may bill the prompt)."""
    if took:
        err.reached_upstream = True
    return err


ErrorMapper = Callable[[int, str, Any, Any], errors.GatewayError]
