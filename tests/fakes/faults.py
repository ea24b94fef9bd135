"""Scripted faults and traffic counters for fake upstreams (any provider's fake can use them).

A test scripts what the *next* requests suffer; with the queue empty the fake answers
normally. Each request takes at most one fault, first in first out::

    fake.faults.push(Fault(status=503, body={...}))          # next request: 503 with that body
    fake.faults.push(Fault.cut(after=2), times=3)            # next 3 streams: 2 chunks, then the
                                                             #   TCP connection drops (no [DONE])
    fake.faults.push(Fault.slow(headers=0.5))                # headers only after 0.5 s
    fake.faults.push(Fault.slow(first_chunk=0.5, between=0.05))  # late first chunk, slow rest
    fake.faults.push(Fault.stall_forever())                  # never answers (until the client leaves)
    fake.faults.push(Fault.non_json_body())                  # 200 with an HTML body (streams: a
                                                             #   non-JSON data event)
    fake.faults.push(Fault(stream_error={"error": {...}}, cut_after=1))  # 1 chunk, then an error event
    fake.faults.push(Fault(no_done=True))                    # whole stream, clean end, no [DONE]
    fake.faults.push(Fault(no_usage=True))                   # whole stream, no usage reported in it
    fake.faults.push(Fault(stall=True, only="/chat/completions"))  # leaves other paths alone
    fake.faults.push(Fault(status=500, body={...}, delay_body=1.0))  # the status at once, its body late
    fake.faults.always(Fault.status_only(500))               # every request, until clear()
    fake.faults.clear()

Provider-shaped error bodies come from each fake's own helpers (``openai_faults``).
``fake.traffic`` counts what arrived: ``requests``, ``completed``, ``disconnects``
(the client went away before the answer was complete: a cancelled stream, a client
timeout) and keeps ``log`` (method, path, query, headers, JSON body) for assertions.
Fakes run in another thread; counters are plain ints, safe to read from tests, and
``await traffic.wait_for("disconnects", 1)`` polls without blocking the test's loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

HTML_BODY = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


@dataclass(frozen=True)
class Fault:
    """What goes wrong with one request. Fields combine (e.g. slow headers, then a cut stream)."""

    status: int | None = None  # answer this status with `body` and `headers` instead of the real answer
    body: Any = None  # dict/list -> JSON, str/bytes -> sent as is
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_headers: float = 0.0  # seconds before anything is sent
    delay_first_chunk: float = 0.0  # streams: seconds between headers and the first chunk
    chunk_delay: float = 0.0  # streams: seconds between chunks
    cut_after: int | None = None  # streams: after K chunks drop the connection (or send stream_error)
    stall_after: int | None = None  # streams: after K chunks send nothing more, ever (until the client leaves)
    stream_error: Any = None  # streams: send this as a `data:` event after cut_after chunks, then end
    no_done: bool = False  # streams: end the response cleanly but without the end marker ([DONE])
    # streams: report no usage anywhere (a compatible server that ignores the ask); Anthropic's whole answers too
    no_usage: bool = False
    start_usage_only: bool = False  # Anthropic streams: usage in message_start, none in message_delta
    served_tier: str | None = None  # report this service_tier (OpenAI downgrades priority over its limits)
    non_json: bool = False  # 200 with a body that is not JSON (streams: a non-JSON data event)
    stall: bool = False  # send nothing, ever; ends only when the client disconnects
    delay_body: float = 0.0  # with `status`: seconds between the status line and headers and the body
    only: str | None = None  # apply only to requests whose path ends with this

    @classmethod
    def status_only(cls, status: int, body: Any = None, **headers: str) -> Fault:
        return cls(status=status, body=body if body is not None else {}, headers=headers)

    @classmethod
    def cut(cls, after: int = 1) -> Fault:
        return cls(cut_after=after)

    @classmethod
    def slow(cls, headers: float = 0.0, first_chunk: float = 0.0, between: float = 0.0) -> Fault:
        return cls(delay_headers=headers, delay_first_chunk=first_chunk, chunk_delay=between)

    @classmethod
    def stall_forever(cls) -> Fault:
        return cls(stall=True)

    @classmethod
    def non_json_body(cls) -> Fault:
        return cls(non_json=True)


class FaultScript:
    """A FIFO of faults for the next requests, plus an optional standing fault."""

    def __init__(self) -> None:
        self._queue: deque[Fault] = deque()
        self._always: Fault | None = None
        self._lock = threading.Lock()

    def push(self, *faults: Fault, times: int = 1) -> None:
        with self._lock:
            for _ in range(times):
                self._queue.extend(faults)

    def always(self, fault: Fault | None) -> None:
        with self._lock:
            self._always = fault

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._always = None

    def pending(self) -> int:
        return len(self._queue)

    def take(self, path: str) -> Fault | None:
        """The fault for a request to `path`: the first queued one that applies, else the standing one (if it
        applies: ``only`` holds for both)."""
        with self._lock:
            for i, fault in enumerate(self._queue):
                if fault.only is None or path.endswith(fault.only):
                    del self._queue[i]
                    return fault
            standing = self._always
            return standing if standing is None or standing.only is None or path.endswith(standing.only) else None


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Traffic:
    """What the fake saw. Reset between tests with ``reset()``."""

    requests: int = 0
    completed: int = 0
    disconnects: int = 0
    log: list[Recorded] = field(default_factory=list)

    def reset(self) -> None:
        self.requests = self.completed = self.disconnects = 0
        self.log.clear()

    def record(self, request: web.Request, body: Any) -> None:
        self.requests += 1
        self.log.append(
            Recorded(request.method, request.path, dict(request.query), dict(request.headers), body)
        )

    @property
    def last(self) -> Recorded:
        return self.log[-1]

    async def wait_for(self, counter: str, at_least: int, within: float = 2.0) -> int:
        """Poll a counter from an async test; returns its value (check it in the test).

        Polling, not an Event: the fake counts on its own thread's loop.
        """
        end = time.monotonic() + within
        while getattr(self, counter) < at_least and time.monotonic() < end:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        return int(getattr(self, counter))


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def sleep_watching(request: web.Request, seconds: float | None) -> bool:
    """Sleep (forever if None) unless the client disconnects; True if it is still there."""
    end = None if seconds is None else time.monotonic() + seconds
    while end is None or time.monotonic() < end:
        if client_gone(request):
            return False
        step = 0.01 if end is None else min(0.01, max(0.0, end - time.monotonic()))
        await asyncio.sleep(step)
    return not client_gone(request)


def encode_body(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return orjson.dumps(body)


async def before_answer(
    request: web.Request, fault: Fault | None, traffic: Traffic, headers: Mapping[str, str]
) -> web.StreamResponse | None:
    """Apply the parts of a fault that come before the real answer; a response ends the request."""
    if fault is None:
        return None
    if fault.delay_headers and not await sleep_watching(request, fault.delay_headers):
        traffic.disconnects += 1
        return web.Response(status=499)
    if fault.stall:
        await sleep_watching(request, None)
        traffic.disconnects += 1
        return web.Response(status=499)
    if fault.status is not None:
        ctype = "application/json" if isinstance(fault.body, dict | list) else "text/plain"
        out = {**headers, "Content-Type": ctype, **fault.headers}
        if fault.delay_body:  # the status line and headers now, the body later (a slow proxy's error page)
            resp = web.StreamResponse(status=fault.status, headers=out)
            await resp.prepare(request)
            if not await sleep_watching(request, fault.delay_body):
                traffic.disconnects += 1
                return resp
            await resp.write(encode_body(fault.body))
            traffic.completed += 1
            return resp
        traffic.completed += 1
        return web.Response(status=fault.status, body=encode_body(fault.body), headers=out)
    return None  # non_json and the stream parts are applied by the handler


async def send_sse(
    request: web.Request,
    headers: Mapping[str, str],
    events: Iterable[bytes],
    fault: Fault | None,
    traffic: Traffic,
    end: bytes | None = b"data: [DONE]\n\n",
) -> web.StreamResponse:
    """Stream pre-framed SSE events (each ending in a blank line), applying the fault's stream parts."""
    f = fault or Fault()
    resp = web.StreamResponse(status=200, headers={**headers, "Content-Type": "text/event-stream; charset=utf-8"})
    stop = f.cut_after if f.cut_after is not None else (0 if f.stream_error is not None else None)
    if f.non_json:
        events = [b"data: <html>upstream proxy error</html>\n\n"]
    try:
        await resp.prepare(request)
        for i, event in enumerate(events):
            if i == stop:
                break
            if i == f.stall_after:
                await sleep_watching(request, None)
                traffic.disconnects += 1
                return resp
            pause = f.delay_first_chunk if i == 0 else f.chunk_delay
            if (pause and not await sleep_watching(request, pause)) or client_gone(request):
                traffic.disconnects += 1
                return resp
            await resp.write(event)
        if f.stream_error is not None:
            await resp.write(b"data: " + encode_body(f.stream_error) + b"\n\n")
        elif stop is not None:
            await asyncio.sleep(0)
            if request.transport is not None:
                request.transport.close()  # abrupt: no [DONE], no terminating chunk
            return resp
        elif end is not None and not f.no_done:
            await resp.write(end)
        traffic.completed += 1
        await resp.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        traffic.disconnects += 1
        raise
    return resp
