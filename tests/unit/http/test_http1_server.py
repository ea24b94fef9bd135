"""aigw's HTTP/1.1 server, spoken to over real loopback sockets with hand-written requests."""

from __future__ import annotations

import asyncio
import contextvars
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from aigw.http import http1_connection
from aigw.http.http1_exchange import EXCHANGE
from aigw.http.http1_server import Server, StartupFailed

Scope = dict[str, Any]


async def lifespan_ok(receive: Any, send: Any, events: list[str] | None = None) -> None:
    while True:
        message = await receive()
        if events is not None:
            events.append(message["type"])
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return


def with_lifespan(handler: Any) -> Any:
    """An HTTP-only test app made whole: lifespan events are answered, everything else goes to ``handler``."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan_ok(receive, send)
            return
        await handler(scope, receive, send)

    return app


async def read_body(receive: Any) -> bytes:
    parts = []
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        parts.append(message["body"])
        if not message["more_body"]:
            return b"".join(parts)


@with_lifespan
async def echo(scope: Scope, receive: Any, send: Any) -> None:
    """Answers with the method, path, query and body it got; ``/slow`` waits first."""
    body = await read_body(receive)
    if scope["path"] == "/slow":
        await asyncio.sleep(0.3)
    answer = b"%s %s ?%s %s" % (scope["method"].encode(), scope["path"].encode(), scope["query_string"], body)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(answer))]})
    await send({"type": "http.response.body", "body": answer})


@asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[Server]:
    server = Server(app, "127.0.0.1", 0, **options)
    task = asyncio.get_running_loop().create_task(server.serve())
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    try:
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def connect(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-cased names) and the body, de-chunked."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)).strip(), 16)
            chunk = await asyncio.wait_for(reader.readexactly(size + 2), 5)
            if size == 0:
                break
            parts.append(chunk[:-2])
        body = b"".join(parts)
    else:
        body = b""
    return status, headers, body


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "host: t", f"content-length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), 5) == b""


async def test_keep_alive_answers_several_requests_on_one_connection() -> None:
    async with serving(echo) as server:
        reader, writer = await connect(server)
        for i in range(3):
            writer.write(post(f"/v1/x%20y?i={i}", b"body %d" % i))
            status, headers, body = await read_response(reader)
            assert status == 200
            assert body == b"POST /v1/x y ?i=%d body %d" % (i, i)  # the path arrives percent-decoded
            assert "date" in headers and "server" not in headers and "connection" not in headers
        writer.close()


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with serving(echo) as server:
        reader, writer = await connect(server)
        writer.write(post("/slow", b"first") + post("/fast", b"second"))  # the slow one must still come first
        assert (await read_response(reader))[2] == b"POST /slow ? first"
        assert (await read_response(reader))[2] == b"POST /fast ? second"
        writer.close()


async def test_a_chunked_request_body_arrives_whole() -> None:
    async with serving(echo) as server:
        reader, writer = await connect(server)
        writer.write(b"POST /c HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        assert (await read_response(reader))[2] == b"POST /c ? hello world"
        writer.close()


async def test_a_large_body_is_delivered_in_full_through_back_pressure() -> None:
    seen: list[int] = []

    @with_lifespan
    async def count(scope: Scope, receive: Any, send: Any) -> None:
        body = await read_body(receive)
        seen.append(len(body))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with serving(count) as server:
        reader, writer = await connect(server)
        big = bytes(range(256)) * 8192  # 2 MiB
        writer.write(post("/big", big))
        status, _, _ = await read_response(reader)
        assert status == 204 and seen == [len(big)]
        writer.close()


async def ask_with_100_continue(server: Server, body: bytes) -> bytes:
    """POST /e asking for ``100 Continue`` first: waits for it, then sends ``body``; the answer's body."""
    reader, writer = await connect(server)
    writer.write(b"POST /e HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\nexpect: 100-continue\r\n\r\n" % len(body))
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    answer = (await read_response(reader))[2]
    writer.close()
    return answer


async def test_expect_100_continue_gets_a_go_ahead_before_the_body() -> None:
    async with serving(echo) as server:
        assert await ask_with_100_continue(server, b"data") == b"POST /e ? data"


async def test_a_response_without_length_is_chunked_and_streams() -> None:
    @with_lifespan
    async def stream(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with serving(stream) as server:
        reader, writer = await connect(server)
        writer.write(b"GET /s HTTP/1.1\r\nhost: t\r\n\r\n")
        _, headers, body = await read_response(reader)
        assert headers["transfer-encoding"] == "chunked"
        assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        writer.write(b"GET /s HTTP/1.1\r\nhost: t\r\n\r\n")  # and the connection is still good
        assert (await read_response(reader))[0] == 200
        writer.close()


async def test_an_http_1_0_client_gets_a_stream_ended_by_the_close_not_chunked() -> None:
    @with_lifespan
    async def stream(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one ", "more_body": True})
        await send({"type": "http.response.body", "body": b"two"})

    async with serving(stream) as server:
        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"transfer-encoding" not in head and b"connection: close" in head
        assert await asyncio.wait_for(reader.read(), 5) == b"one two"
        writer.close()


async def test_an_http_1_0_client_that_asks_to_keep_alive_is_told_it_is_kept() -> None:
    async with serving(echo) as server:
        reader, writer = await connect(server)
        for _ in range(2):  # RFC 9112 C.2.2: a 1.0 client keeps it only when told
            writer.write(b"GET /a HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
            status, headers, body = await read_response(reader)
            assert (status, headers.get("connection"), body) == (200, "keep-alive", b"GET /a ? ")
        writer.write(b"GET /a HTTP/1.0\r\n\r\n")
        assert (await read_response(reader))[1]["connection"] == "close"
        assert await closed_by_server(reader)
        writer.close()


async def test_head_gets_headers_and_no_body() -> None:
    async with serving(echo) as server:
        reader, writer = await connect(server)
        writer.write(b"HEAD /h HTTP/1.1\r\nhost: t\r\n\r\nGET /after HTTP/1.1\r\nhost: t\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 10" in head
        status, _, body = await read_response(reader)  # the next bytes are the next response, not a body
        assert status == 200 and body == b"GET /after ? "
        writer.close()


@pytest.mark.parametrize(("raw", "status"), [
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: t\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    (b"GET /?q=" + b"a" * 70_000 + b" HTTP/1.1\r\nhost: t\r\n\r\n", 414),  # RFC 9112 3: URI Too Long
    (b"GET / HTTP/1.1\r\nhost: t\r\n" + b"".join(b"x-h%d: v\r\n" % i for i in range(201)) + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nhost: t\r\n" + b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 400) for i in range(180))
     + b"\r\n", 431),  # 180 headers (under the count) of ~72 KB in all
])
async def test_bad_requests_get_a_clear_status_and_the_connection_closes(raw: bytes, status: int) -> None:
    async with serving(echo) as server:
        reader, writer = await connect(server)
        writer.write(raw)
        got, headers, _ = await read_response(reader)
        assert got == status and headers["connection"] == "close"
        assert await closed_by_server(reader)
        writer.close()


async def test_header_names_reach_the_app_lowered_in_order_and_any_case_of_expect_is_heard() -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    @with_lifespan
    async def headers(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(scope["headers"])
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async with serving(headers) as server:
        reader, writer = await connect(server)
        writer.write(b"POST /h HTTP/1.1\r\nHost: t\r\nX-Mixed-Case: Keep-Value\r\nx-expected: no\r\n"
                     b"EXPECT: 100-Continue\r\nContent-Length: 2\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"ok")
        assert (await read_response(reader))[0] == 200
        writer.write(b"POST /h HTTP/1.1\r\nhost: t\r\nx-expect: 100-continue\r\ncontent-length: 0\r\n\r\n")
        assert (await read_response(reader))[0] == 200  # no 100 Continue for a header merely named alike
        writer.close()
    assert seen[0] == [(b"host", b"t"), (b"x-mixed-case", b"Keep-Value"), (b"x-expected", b"no"),
                       (b"expect", b"100-Continue"), (b"content-length", b"2")]


async def test_a_head_that_grows_over_many_reads_is_refused_once_over_the_limit() -> None:
    """A client trickling header lines, each read small: the head's reads so far count, so the server refuses
    it (431) at the limit instead of buffering headers without end."""
    async with serving(echo) as server:
        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nhost: t\r\n")
        refused = None
        for i in range(40):  # 40 x 2 KB: the limit (64 KB) is passed on the 33rd
            try:
                writer.write(b"x-h%d: %s\r\n" % (i, b"v" * 2040))
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.005)
            if reader.at_eof() or len(reader._buffer) > 0:  # type: ignore[attr-defined]
                refused = i
                break
        status, headers, _ = await read_response(reader)
        assert status == 431 and headers["connection"] == "close"
        assert refused is not None and 30 <= refused <= 34
        writer.close()


async def test_an_app_error_before_answering_is_a_500_and_after_it_a_cut_connection() -> None:
    @with_lifespan
    async def failing(scope: Scope, receive: Any, send: Any) -> None:
        if scope["path"] == "/late":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("boom")

    async with serving(failing) as server:
        reader, writer = await connect(server)
        writer.write(b"GET /early HTTP/1.1\r\nhost: t\r\n\r\n")
        status, headers, _ = await read_response(reader)
        assert status == 500 and headers["connection"] == "close"
        assert await closed_by_server(reader)
        reader, writer = await connect(server)
        writer.write(b"GET /late HTTP/1.1\r\nhost: t\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert await asyncio.wait_for(reader.read(), 5) == b"partial"  # 7 of 100 bytes, then EOF
        writer.close()


async def test_a_header_with_a_line_break_never_reaches_the_wire() -> None:
    @with_lifespan
    async def splitting(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-note", b"a\r\nset-cookie: stolen=1"), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async with serving(splitting) as server:
        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        status, headers, _ = await read_response(reader)
        assert status == 500 and "set-cookie" not in headers
        writer.close()


async def test_the_app_hears_of_a_client_that_leaves_mid_stream_and_may_stop_quietly(
        caplog: pytest.LogCaptureFixture) -> None:
    heard = asyncio.Event()

    @with_lifespan
    async def endless(scope: Scope, receive: Any, send: Any) -> None:
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        assert (await receive())["type"] == "http.disconnect"
        await send({"type": "http.response.body", "body": b"nobody reads this", "more_body": True})  # no error
        heard.set()  # and returns without finishing the answer: nobody is there to finish it for

    async with serving(endless) as server:
        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"first\r\n"), 5)
        writer.close()
        await asyncio.wait_for(heard.wait(), 5)
        await asyncio.sleep(0.05)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize("request_head", [
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
])
async def test_a_client_that_asks_to_close_is_answered_then_closed(request_head: bytes) -> None:
    async with serving(echo) as server:
        reader, writer = await connect(server)
        writer.write(request_head)
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await closed_by_server(reader)
        writer.close()


async def test_an_upgrade_offer_is_answered_as_plain_http_and_the_connection_kept() -> None:
    """RFC 9110 7.8: a server may ignore Upgrade; the client then goes on in HTTP/1.1 on the same connection."""
    async with serving(echo) as server:
        reader, writer = await connect(server)
        offer = b"GET /ws HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
        writer.write(offer * 3 + post("/next", b"body"))  # in one read
        for _ in range(3):
            assert (await read_response(reader))[::2] == (200, b"GET /ws ? ")
        status, headers, body = await read_response(reader)
        assert (status, body) == (200, b"POST /next ? body") and "connection" not in headers
        writer.close()


async def test_a_body_still_arriving_after_the_answer_closes_the_connection() -> None:
    @with_lifespan
    async def refuse(scope: Scope, receive: Any, send: Any) -> None:  # e.g. a 401 before reading the body
        await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async with serving(refuse) as server:
        reader, writer = await connect(server)
        writer.write(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\nGET /not-a-request")
        status, headers, _ = await read_response(reader)
        assert status == 401 and headers.get("connection") == "close"  # said before it is done, as RFC 9112 9.6 asks
        assert await closed_by_server(reader)  # the rest of the body is never parsed as a request
        writer.close()


async def test_idle_connections_are_closed_after_the_idle_timeout() -> None:
    async with serving(echo, idle_timeout_s=0.2) as server:
        reader, writer = await connect(server)
        writer.write(post("/", b""))
        await read_response(reader)
        assert await closed_by_server(reader)  # within the once-a-second sweep
        writer.close()


async def test_a_client_too_slow_to_send_its_request_head_is_cut_off() -> None:
    async with serving(echo, head_timeout_s=0.5, idle_timeout_s=60) as server:
        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nhost: t\r\n")  # and never the blank line
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_a_request_body_that_stalls_is_cut_off_but_a_slow_steady_one_is_not() -> None:
    async with serving(echo, body_timeout_s=0.6, idle_timeout_s=60) as server:
        stalled_reader, stalled = await connect(server)
        stalled.write(b"POST /stalled HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\nabc")  # 7 bytes owed
        steady_reader, steady = await connect(server)
        steady.write(b"POST /steady HTTP/1.1\r\nhost: t\r\ncontent-length: 6\r\n\r\n")
        for part in (b"ab", b"cd", b"ef"):  # a byte pair every 0.4 s: never 0.6 s without one
            await asyncio.sleep(0.4)
            steady.write(part)
        assert (await read_response(steady_reader))[2] == b"POST /steady ? abcdef"
        assert await asyncio.wait_for(stalled_reader.read(), 5) == b""  # closed, with no answer
        stalled.close()
        steady.close()


async def test_a_client_waiting_for_100_continue_is_not_stalling() -> None:
    @with_lifespan
    async def slow_to_read(scope: Scope, receive: Any, send: Any) -> None:
        await asyncio.sleep(1.6)  # e.g. a key lookup first: the go-ahead comes with the first read
        await echo(scope, receive, send)

    async with serving(slow_to_read, body_timeout_s=0.5, idle_timeout_s=60) as server:
        assert await ask_with_100_continue(server, b"ping") == b"POST /e ? ping"


async def test_a_body_held_back_by_the_server_itself_is_not_a_stall() -> None:
    @with_lifespan
    async def late_reader(scope: Scope, receive: Any, send: Any) -> None:
        await asyncio.sleep(1.6)  # the body fills the buffer and reading pauses meanwhile
        body = await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    big = b"x" * (4 * 1024 * 1024)  # more than the buffer the server reads ahead and the socket holds
    async with serving(late_reader, body_timeout_s=0.5, idle_timeout_s=60) as server:
        reader, writer = await connect(server)
        writer.write(post("/", big))
        status, _, body = await read_response(reader)
        assert status == 200 and body == big
        writer.close()


async def test_shutdown_finishes_requests_in_flight_and_refuses_new_connections() -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan_ok(receive, send, events)
            return
        await echo(scope, receive, send)

    async with serving(app) as server:
        busy_reader, busy_writer = await connect(server)
        idle_reader, idle_writer = await connect(server)
        busy_writer.write(post("/slow", b"in flight"))
        await asyncio.sleep(0.1)
        server.should_exit = True
        status, headers, body = await read_response(busy_reader)
        assert (status, body) == (200, b"POST /slow ? in flight") and headers["connection"] == "close"
        assert await closed_by_server(idle_reader)
        await asyncio.sleep(0.2)
        with pytest.raises(OSError):
            await connect(server)
        busy_writer.close()
        idle_writer.close()
    assert events == ["lifespan.startup", "lifespan.shutdown"]


async def test_a_request_still_running_at_the_grace_limit_is_cancelled() -> None:
    cancelled = asyncio.Event()

    @with_lifespan
    async def stuck(scope: Scope, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with serving(stuck, graceful_timeout_s=0.2) as server:
        _, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        await asyncio.sleep(0.1)
    assert cancelled.is_set()
    writer.close()


async def test_a_failed_start_up_is_an_error_and_nothing_listens() -> None:
    async def broken(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    server = Server(broken, "127.0.0.1", 0)
    with pytest.raises(RuntimeError, match="failed to start"):
        await asyncio.wait_for(server.serve(install_signals=True), 5)
    assert not server.started
    # its signal handlers are gone with it: a caller that goes on is not left with a dead server's handlers
    assert not asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)


def _hanging_start_up() -> tuple[Any, asyncio.Event]:
    """An app whose start-up never ends (a database that accepts and never answers), and the event its
    cancellation sets."""
    cancelled = asyncio.Event()

    async def hanging(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    return hanging, cancelled


async def test_a_signal_while_the_app_starts_stops_the_start_up_and_the_server() -> None:
    # e.g. a database that accepts connections and never answers: the start-up waits, and SIGTERM was
    # ignored until it gave up (two minutes); now the start-up is cancelled and nothing listens
    hanging, cancelled = _hanging_start_up()
    server = Server(hanging, "127.0.0.1", 0)
    serving = asyncio.create_task(server.serve())
    await asyncio.sleep(0.05)
    server._on_signal(signal.SIGTERM)  # what the installed handler does
    await asyncio.wait_for(serving, 2)
    assert cancelled.is_set() and not server.started
    assert server.caught_signal == signal.SIGTERM  # ``run`` re-raises it: the process ends by SIGTERM


async def test_a_server_cancelled_while_the_app_starts_cancels_the_start_up_too() -> None:
    """The task running ``serve`` is cancelled (an embedding program stops it): the app's start-up does not
    run on without it, holding its database connection."""
    hanging, cancelled = _hanging_start_up()
    serving = asyncio.create_task(Server(hanging, "127.0.0.1", 0).serve())
    await asyncio.sleep(0.05)
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    await asyncio.wait_for(cancelled.wait(), 1)


async def test_big_answers_arrive_intact_through_a_slow_reader() -> None:
    block = bytes(range(256)) * 256  # 64 KiB

    @with_lifespan
    async def big(scope: Scope, receive: Any, send: Any) -> None:
        if scope["path"] == "/whole":  # a head and a large body: two writes
            body = block * 4
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(256):  # 16 MiB: more than the socket buffers hold, so writing pauses until the client reads
            await send({"type": "http.response.body", "body": block, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with serving(big) as server:
        reader, writer = await connect(server)
        writer.write(b"GET /whole HTTP/1.1\r\nhost: t\r\n\r\nGET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
        assert (await read_response(reader))[2] == block * 4
        await asyncio.sleep(0.3)  # let the stream fill every buffer first
        assert (await read_response(reader))[2] == block * 256
        writer.close()


async def test_stream_parts_sent_in_one_loop_turn_leave_in_one_write() -> None:
    from aigw.http.http1_connection import Connection
    from aigw.http.http1_exchange import Exchange
    from aigw.http.http1_state import ServerState

    class Recorder:
        def __init__(self) -> None:
            self.writes: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.writes.append(data)

        def get_extra_info(self, name: str) -> None:
            return None

    loop = asyncio.get_running_loop()
    conn = Connection(ServerState(echo, idle_timeout_s=5), loop)
    transport = Recorder()
    conn.connection_made(transport)  # type: ignore[arg-type]
    ex = Exchange(conn, {"method": "GET", "http_version": "1.1", "path": "/"}, True, False)
    ex.body_done = True
    await ex.send({"type": "http.response.start", "status": 200, "headers": []})
    assert transport.writes == []  # the head waits for the first event
    for i in range(20):  # e.g. twenty events from one upstream read
        await ex.send({"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True})
    assert len(transport.writes) == 1  # the head and the first event left at once (time to first chunk)
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK") and transport.writes[0].count(b"data: ") == 1
    await asyncio.sleep(0)  # the other nineteen leave together at the end of the loop turn
    assert len(transport.writes) == 2 and transport.writes[1].count(b"data: ") == 19
    await ex.send({"type": "http.response.body", "body": b"data: last\n\n", "more_body": True})
    await ex.send({"type": "http.response.body", "body": b""})  # the end flushes at once
    assert len(transport.writes) == 3 and transport.writes[2].endswith(b"data: last\n\n\r\n0\r\n\r\n")


async def test_a_port_in_use_is_a_start_up_failure_that_says_so_and_never_announced() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    announced: list[int] = []
    server = Server(with_lifespan(echo), "127.0.0.1", port, on_listen=announced.append)
    try:
        with pytest.raises(StartupFailed, match=f"cannot listen on 127.0.0.1:{port}: address already in use"):
            await asyncio.wait_for(server.serve(), 5)
    finally:
        taken.close()
    assert not server.started and announced == []


@pytest.mark.parametrize("raw", [
    b"POST /b HTTP/1.1\r\nhost: t\r\ntransfer-encoding: gzip\r\n\r\nabc",  # RFC 9112 6.3: chunked must be last
    b"POST /b HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",  # a bad chunk size
])
async def test_a_request_whose_body_is_malformed_gets_a_400_and_the_app_hears_the_client_is_gone(raw: bytes) -> None:
    heard: list[str] = []

    @with_lifespan
    async def reader(scope: Scope, receive: Any, send: Any) -> None:
        while True:  # the app is already reading the body when the parser finds it broken
            message = await receive()
            if message["type"] == "http.disconnect" or not message["more_body"]:
                break
        heard.append(message["type"])

    async with serving(reader, body_timeout_s=60) as server:
        reader_, writer = await connect(server)
        writer.write(raw)
        status, headers, _ = await read_response(reader_)
        assert status == 400 and headers["connection"] == "close"  # not a request left hanging for ever
        assert await closed_by_server(reader_)
        await asyncio.sleep(0.05)
        assert heard == ["http.disconnect"]
        writer.close()


async def test_a_client_that_sends_its_whole_body_before_reading_gets_an_early_answer_not_a_reset() -> None:
    """An answer before the body is read (a 413 on the declared length, a 401) closes the connection; closed
    at once, the unread body makes the kernel reset it, and a client that reads only after sending (Python's
    http.client, urllib) got ECONNRESET instead of the answer. RFC 9112 9.6: close in stages."""
    @with_lifespan
    async def too_large(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"big!"})

    async with serving(too_large, idle_timeout_s=60) as server:
        reader, writer = await connect(server)
        big = b"x" * (4 * 1024 * 1024)
        writer.write(post("/", big))
        await asyncio.wait_for(writer.drain(), 5)  # every byte is taken, none refused with a reset
        status, headers, body = await read_response(reader)
        assert (status, headers["connection"], body) == (413, "close", b"big!")
        assert await closed_by_server(reader)
        writer.close()


async def test_a_connection_closing_after_an_early_answer_does_not_linger_for_ever(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1_connection, "LINGER_QUIET_S", 0.2)  # a client quiet this long is done

    @with_lifespan
    async def refuse(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async with serving(refuse, idle_timeout_s=60, body_timeout_s=60) as server:
        reader, writer = await connect(server)
        writer.write(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\nabc")  # and then nothing more
        assert (await read_response(reader))[0] == 401
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the server's side is shut at once...
        for _ in range(40):  # ...and the connection closed soon after (the sweep runs once a second)
            if not server.state.connections:
                break
            await asyncio.sleep(0.1)
        assert not server.state.connections
        writer.close()


async def test_an_http_1_0_client_is_never_sent_100_continue() -> None:
    async with serving(echo) as server:  # RFC 9110 10.1.1 and 15.2: the expectation is ignored, no 1xx to 1.0
        reader, writer = await connect(server)
        writer.write(b"POST /e HTTP/1.0\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\ndata")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ") and await asyncio.wait_for(reader.read(), 5) == b"POST /e ? data"
        writer.close()


def test_a_host_name_that_does_not_resolve_is_said_so_not_as_an_unknown_error() -> None:
    """``--host no-such-host``: the bind's lookup fails with a resolver error (errno -2, EAI_NONAME), which
    ``os.strerror`` words "Unknown error -2": the operator was not told that the name does not resolve."""
    import socket

    from aigw.http.http1_server import cannot_listen

    said = str(cannot_listen("no-such-host", 4000, socket.gaierror(-2, "Name or service not known")))
    assert "no-such-host" in said and "does not resolve" in said and "unknown error" not in said.lower(), said


request_path: contextvars.ContextVar[str] = contextvars.ContextVar("request_path", default="")


async def test_a_pipelined_request_starts_in_a_context_of_its_own_not_the_one_before_it() -> None:
    """A context variable one request sets (a trace's current span, a request id) is never the next one's."""
    seen: list[str] = []

    @with_lifespan
    async def remembers(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(request_path.get())
        request_path.set(scope["path"])
        if scope["path"] == "/slow":
            await asyncio.sleep(0.05)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async with serving(remembers) as server:
        reader, writer = await connect(server)
        writer.write(b"".join(post(path, b"") for path in ("/a", "/slow", "/b", "/c")))
        for _ in range(4):
            assert (await read_response(reader))[0] == 200
        writer.close()
    assert seen == ["", "", "", ""]


@pytest.mark.parametrize("taken", ["receive", "body_now"])
async def test_a_client_that_leaves_after_sending_a_large_body_is_heard_to_leave(
        monkeypatch: pytest.MonkeyPatch, taken: str) -> None:
    """A body over the buffer's limit paused reading; once the app has it all (read with ``receive`` or taken at
    once with the Exchange's ``body_now``), reading resumes: else the app (a model call with a long prompt) never
    hears the client went away and runs on for nobody."""
    monkeypatch.setattr(http1_connection, "HIGH_WATER", 1024)
    heard: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @with_lifespan
    async def waits(scope: Scope, receive: Any, send: Any) -> None:
        body = (scope[EXCHANGE].body_now() or b"") if taken == "body_now" else await read_body(receive)
        message = await receive()  # nothing to answer yet (an upstream call would run now)
        heard.set_result(f"{len(body)} {message['type']}")

    async with serving(waits) as server:
        _, writer = await connect(server)
        writer.write(post("/long-prompt", b"x" * 60_000))
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()
        assert await asyncio.wait_for(heard, 2) == "60000 http.disconnect"


async def test_a_pipelined_head_begun_in_a_read_with_a_long_body_is_not_charged_for_the_body() -> None:
    """A long prompt and the first bytes of the next request came in one read, the rest of that head later: only
    the head's own bytes count against its 64 KB limit. Before, the whole read did, so the next request was
    never answered (the connection closed after the first answer)."""
    async with serving(echo) as server:
        reader, writer = await connect(server)
        nxt = post("/next", b"n")
        writer.write(post("/long", b"x" * 100_000) + nxt[:12])
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(nxt[12:])
        status, headers, body = await read_response(reader)
        assert (status, len(body), "connection" in headers) == (200, len("POST /long ? ") + 100_000, False)
        status, _, body = await read_response(reader)
        assert (status, body) == (200, b"POST /next ? n")
        writer.close()


@pytest.mark.parametrize(("opening", "drip", "options"), [
    (b"GET / HTTP/1.1\r\nhost: t\r\nx-slow: ", b"v", {"head_timeout_s": 0.5, "idle_timeout_s": 60}),
    (b"", b"\r\n", {"head_timeout_s": 60, "idle_timeout_s": 0.5}),  # blank lines before a request: idle, not a head
])
async def test_a_slow_loris_that_keeps_sending_is_still_cut_off(opening: bytes, drip: bytes,
                                                                 options: dict[str, float]) -> None:
    """Bytes that keep coming do not reset the head's clock (nor an idle connection's)."""
    async with serving(echo, **options) as server:
        reader, writer = await connect(server)
        writer.write(opening)
        started = asyncio.get_running_loop().time()
        for _ in range(100):  # 5 s at most
            try:
                writer.write(drip)
                await writer.drain()
            except ConnectionError:
                break
            if reader.at_eof():
                break
            await asyncio.sleep(0.05)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert asyncio.get_running_loop().time() - started < 3
        writer.close()
