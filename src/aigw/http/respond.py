"""Send ASGI responses: JSON in one write, streams as they arrive.

A stream watches for the client going away and cancels its producer, so the
upstream call is cancelled too instead of running to its end for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import orjson

from aigw.http.keepalive import KeepAlive
from aigw.http.request import JSON_TYPE, Receive, Send, whole_answer_head

Headers = list[tuple[bytes, bytes]]

SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def header_list(extra: dict[str, str]) -> Headers:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]


async def send_bytes(send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]],
                     content_type: tuple[bytes, bytes] = JSON_TYPE) -> None:
    """A whole response in one start and one body message (no chunked encoding)."""
    head = whole_answer_head(body, headers, content_type)
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, obj: object, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send_bytes(send, status, orjson.dumps(obj), headers)


async def send_text(
    send: Send, status: int, text: bytes, content_type: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await send_bytes(send, status, text, headers, (b"content-type", content_type))


async def send_frames_whole(send: Send, frames: AsyncIterator[bytes], headers: Headers, status: int = 200) -> None:
    """A stream whose frames are all ready now (a replay): gathered, then sent as one body with the
    stream's headers. The client reads the same events; the server makes one write, not one per frame."""
    body = b"".join([frame async for frame in frames])
    await send_bytes(send, status, body, [*SSE_HEADERS[1:], *headers], SSE_HEADERS[0])


def stream_start(headers: Headers, status: int = 200) -> dict[str, Any]:
    """A stream's ``http.response.start``: the SSE headers, then ``headers``."""
    return {"type": "http.response.start", "status": status, "headers": [*SSE_HEADERS, *headers]}


class ClientGone(Exception):
    """The client disconnected while we were streaming to it."""


async def send_stream(
    receive: Receive, send: Send, frames: AsyncIterator[bytes], headers: Headers, status: int = 200,
    interrupted: Callable[[], bytes] | None = None, keepalive: KeepAlive | None = None,
) -> None:
    """Stream frames to the client; if it disconnects, cancel the producer and raise ClientGone. Cancelled
    otherwise (the server shutting down stopped waiting for it), the stream still ends whole: with the
    frame ``interrupted`` makes (an error event in the client's format) and the body's proper end, not a
    cut connection the client reads as a truncated answer. With ``keepalive``, its keep-alives fill the
    pauses (and the head is not sent again if one of them sent it)."""
    task = asyncio.current_task()
    gone = asyncio.Event()
    done = False
    started = False

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if done:  # the server reports "disconnect" once the response is complete
                    return
                gone.set()
                if task is not None:
                    task.cancel()
                return

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        if keepalive is not None:
            await keepalive.pump(frames, stream_start(headers, status))
        else:
            await send(stream_start(headers, status))
            started = True
            async for frame in frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        done = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if gone.is_set() and task is not None:
            task.uncancel()
            raise ClientGone() from None
        if keepalive is not None:  # nothing more of it: the stream ends here
            keepalive.close()
            started = keepalive.started
        if started and not done and interrupted is not None:
            with contextlib.suppress(Exception):  # ``send`` of a last part never waits: no await is cancelled
                await send({"type": "http.response.body", "body": interrupted(), "more_body": False})
        raise
    finally:
        if keepalive is not None:
            keepalive.close()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        aclose = getattr(frames, "aclose", None)
        if aclose is not None:
            await aclose()
