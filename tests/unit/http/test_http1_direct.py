"""The app's direct calls on aigw's server (the scope's ``EXCHANGE``): a body taken without ``receive`` and a
whole answer sent without ``send`` speak the same HTTP as the ASGI messages do."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from aigw.http.http1_exchange import EXCHANGE, Exchange
from tests.unit.http.test_http1_server import (
    Scope,
    closed_by_server,
    connect,
    post,
    read_body,
    read_response,
    serving,
    with_lifespan,
)

taken: list[str] = []  # how each request's body was read: "now" or "receive"


@with_lifespan
async def direct(scope: Scope, receive: Any, send: Any) -> None:
    """Echoes the body with ``body_now`` when it can (else ``receive``) and answers with ``respond``;
    ``/chunked`` answers without a length, ``/slow`` waits first."""
    ex: Exchange = scope[EXCHANGE]
    body = ex.body_now()
    taken.append("now" if body is not None else "receive")
    if body is None:
        body = await read_body(receive)
    if scope["path"] == "/slow":
        await asyncio.sleep(0.2)
    answer = b"%s %s" % (scope["path"].encode(), body)
    if scope["path"] == "/chunked":  # the general way: a start without a length
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": answer})
        return
    extra = [(b"x-note", body)] if scope["path"] == "/note" else []
    if scope["path"] == "/bye":
        extra.append((b"connection", b"close"))
    ex.respond(200, answer, [(b"x-path", scope["path"].encode()), *extra], b"text/plain")


async def test_a_body_that_came_with_its_head_is_taken_at_once_and_answered_in_one_call() -> None:
    taken.clear()
    async with serving(direct) as server:
        reader, writer = await connect(server)
        for i in range(3):  # keep-alive: each answer leaves the connection ready for the next request
            writer.write(post("/x", b"body %d" % i))
            status, headers, body = await read_response(reader)
            assert (status, body, headers["content-length"]) == (200, b"/x body %d" % i, str(len(body)))
            assert "connection" not in headers and "date" in headers
        writer.close()
    assert taken == ["now", "now", "now"]


async def test_pipelined_direct_answers_come_in_order() -> None:
    async with serving(direct) as server:
        reader, writer = await connect(server)
        writer.write(post("/slow", b"first") + post("/fast", b"second"))
        assert (await read_response(reader))[2] == b"/slow first"
        assert (await read_response(reader))[2] == b"/fast second"
        writer.close()


async def test_a_body_still_on_its_way_or_held_for_100_continue_is_read_with_receive() -> None:
    taken.clear()
    async with serving(direct) as server:
        reader, writer = await connect(server)
        request = post("/late", b"0123456789")
        writer.write(request[:-4])  # the head and part of the body
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(request[-4:])
        assert (await read_response(reader))[2] == b"/late 0123456789"
        writer.write(post("/ask", b"abc", "expect: 100-continue"))
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert (await read_response(reader))[2] == b"/ask abc"
        writer.close()
    assert taken == ["receive", "receive"]


async def test_a_direct_answer_without_a_length_is_chunked_and_to_head_has_no_body() -> None:
    async with serving(direct) as server:
        reader, writer = await connect(server)
        writer.write(post("/chunked", b"x"))
        status, headers, body = await read_response(reader)
        assert (status, headers.get("transfer-encoding"), body) == (200, "chunked", b"/chunked x")
        writer.write(b"HEAD /h HTTP/1.1\r\nhost: t\r\n\r\n" + post("/after", b"y"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 3" in head
        assert (await read_response(reader))[2] == b"/after y"  # the next bytes are the next answer
        writer.write(post("/close", b"z", "connection: close"))
        assert (await read_response(reader))[2] == b"/close z" and await closed_by_server(reader)


async def test_a_direct_answer_carries_its_type_length_and_headers_and_keeps_the_connection() -> None:
    async with serving(direct) as server:
        reader, writer = await connect(server)
        writer.write(post("/x", b"abc"))
        status, headers, body = await read_response(reader)
        assert (status, body) == (200, b"/x abc")
        assert (headers["content-type"], headers["content-length"], headers["x-path"]) == ("text/plain", "6", "/x")
        assert "connection" not in headers and "transfer-encoding" not in headers
        writer.write(post("/note", b"connection: close"))  # only a header named so closes, not a value
        status, headers, body = await read_response(reader)
        assert (headers["x-note"], body) == ("connection: close", b"/note connection: close")
        writer.write(post("/bye", b"z"))  # the app's own "connection: close" is honoured
        status, headers, body = await read_response(reader)
        assert (body, headers["connection"]) == (b"/bye z", "close") and await closed_by_server(reader)


async def test_a_direct_answer_to_http_1_0_says_keep_alive_only_when_asked() -> None:
    async with serving(direct) as server:
        reader, writer = await connect(server)
        writer.write(b"POST /old HTTP/1.0\r\ncontent-length: 1\r\nconnection: keep-alive\r\n\r\nq")
        status, headers, body = await read_response(reader)
        assert (status, body, headers["connection"], headers["content-length"]) == (200, b"/old q", "keep-alive", "6")
        writer.write(b"POST /old HTTP/1.0\r\ncontent-length: 1\r\n\r\nr")
        _, headers, body = await read_response(reader)
        assert body == b"/old r" and await closed_by_server(reader)


async def test_a_direct_answer_with_a_line_break_in_a_header_is_never_sent() -> None:
    """A CR or LF in a value would split the answer (response splitting): the call fails, the client gets 500."""
    async with serving(direct) as server:
        reader, writer = await connect(server)
        writer.write(post("/note", b"a\r\nset-cookie: x=1"))
        status, headers, _ = await read_response(reader)
        assert status == 500 and "set-cookie" not in headers and "x-note" not in headers
        writer.close()


async def test_an_answered_request_leaves_nothing_for_the_garbage_collector() -> None:
    """A request's scope and Exchange are freed when its call ends, not kept for the next GC pass (which
    ran every ~2,500 requests and walked them all)."""
    async with serving(direct) as server:
        reader, writer = await connect(server)
        writer.write(post("/warm", b"0"))
        await read_response(reader)
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for i in range(20):
                writer.write(post("/x", b"%d" % i))
                assert (await read_response(reader))[2] == b"/x %d" % i
            gc.collect()
            left = [o for o in gc.garbage if isinstance(o, Exchange)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        assert left == []
        writer.close()


async def test_hundreds_of_pipelined_requests_answered_at_once_are_all_answered() -> None:
    """Each answered without waiting: the next one must not run inside the one before (the stack would
    grow by a request each time, and past ~100 the rest of the connection was lost to a RecursionError)."""
    count = 400
    async with serving(direct) as server:
        reader, writer = await connect(server)
        writer.write(b"".join(post(f"/p{i}", b"%d" % i) for i in range(count)))
        for i in range(count):
            assert (await read_response(reader))[2] == b"/p%d %d" % (i, i)
        writer.close()


