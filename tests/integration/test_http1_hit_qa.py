"""aigw's own server on the cache's hit path, as raw-socket clients and the official SDKs meet it: heads in
pieces, heads at the size limits, pipelined hits and misses, 100-continue, HTTP/1.0, HEAD, clients that leave."""

from __future__ import annotations

import gc
import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anthropic
import openai
import pytest

from aigw.cli.admin_client import AdminClient
from aigw.http.http1_head import MAX_HEAD_BYTES, MAX_HEADERS
from tests.integration.tenancy_support import MASTER, chat_body, gateway_config, setup_key
from tests.integration.worker_conns import serving_workers
from tests.support.gateway import RunningGateway, running_gateway

CONFIG: dict[str, Any] = {"cache": {"mode": "exact", "ttl_s": 600}, "models": [{"name": "mock", "provider": "mock"}]}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = tmp_path_factory.mktemp("hit-qa") / "gw.db"
    with running_gateway({**CONFIG, "database_url": f"sqlite:///{db}"}) as gw:
        yield gw


def chat(text: str) -> bytes:
    return json.dumps({"model": "mock", "messages": [{"role": "user", "content": text}], "max_tokens": 8}).encode()


def post(body: bytes, *extra: bytes, path: bytes = b"/v1/chat/completions", version: bytes = b"1.1") -> bytes:
    head = [b"POST %s HTTP/%s" % (path, version), b"host: t", b"content-type: application/json",
            b"content-length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class Conn:
    """A blocking loopback client that reads whole answers (content-length or chunked) off its own buffer."""

    def __init__(self, gw: RunningGateway) -> None:
        port = int(gw.url.rsplit(":", 1)[1])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise EOFError(self.buf)
        self.buf += chunk

    def _until(self, mark: bytes) -> bytes:
        for _ in range(10_000):
            at = self.buf.find(mark)
            if at >= 0:
                out, self.buf = self.buf[:at + len(mark)], self.buf[at + len(mark):]
                return out
            self._fill()
        raise AssertionError("no end")

    def _exactly(self, n: int) -> bytes:
        for _ in range(10_000):
            if len(self.buf) >= n:
                out, self.buf = self.buf[:n], self.buf[n:]
                return out
            self._fill()
        raise AssertionError("no end")

    def answer(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        lines = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                assert name.strip().lower() not in headers, lines
                headers[name.strip().lower()] = value.strip()
        if head_only or status == 100:
            return status, headers, b""
        if "content-length" in headers:
            return status, headers, self._exactly(int(headers["content-length"]))
        if headers.get("transfer-encoding") == "chunked":
            parts = []
            for _ in range(100_000):
                size = int(self._until(b"\r\n").strip(), 16)
                parts.append(self._exactly(size + 2)[:-2])
                if size == 0:
                    return status, headers, b"".join(parts)
        body = b""
        try:
            for _ in range(100_000):
                self._fill()
        except EOFError:
            body, self.buf = self.buf, b""
        return status, headers, body

    def closed(self) -> bool:
        try:
            self._fill()
        except (EOFError, ConnectionError):
            return True
        return False

    def close(self) -> None:
        self.sock.close()


def content(body: bytes) -> str:
    return str(json.loads(body)["choices"][0]["message"]["content"])


def warm(gw: RunningGateway, text: str) -> tuple[str, str]:
    """Ask once (a miss) and then again until it is a hit; the answer's content and the hit's header."""
    c = Conn(gw)
    c.send(post(chat(text)))
    status, headers, body = c.answer()
    assert status == 200, body
    first = content(body)
    for _ in range(100):
        c.send(post(chat(text)))
        status, headers, body = c.answer()
        if headers.get("x-aigw-cache") == "hit":
            assert content(body) == first
            c.close()
            return first, headers["x-aigw-cache"]
        time.sleep(0.02)
    raise AssertionError(headers)


def test_a_hit_whose_head_arrives_split_at_every_byte_is_answered_each_time(gw: RunningGateway) -> None:
    expected, _ = warm(gw, "split me")
    raw = post(chat("split me"))
    head_end = raw.index(b"\r\n\r\n") + 4
    c = Conn(gw)
    for cut in range(1, head_end + 2):
        c.send(raw[:cut])
        time.sleep(0.002)
        c.send(raw[cut:])
        status, headers, body = c.answer()
        assert (status, headers.get("x-aigw-cache"), content(body)) == (200, "hit", expected), cut
    c.close()


def test_a_head_trickled_a_byte_a_read_is_answered(gw: RunningGateway) -> None:
    expected, _ = warm(gw, "trickle")
    raw = post(chat("trickle"))
    c = Conn(gw)
    for i in range(len(raw)):
        c.send(raw[i:i + 1])
        if i % 8 == 0:
            time.sleep(0.001)
    status, _, body = c.answer()
    assert (status, content(body)) == (200, expected)
    c.close()


def head_of_size(size: int, count: int = 1) -> bytes:
    """A GET whose head counts ``size`` bytes as the server counts it (target, names, values, 4 a line)."""
    target = b"/health/live"
    fixed = len(target) + len(b"host") + len(b"t") + 4
    names = [b"x-f%d" % i for i in range(count)]
    room = size - fixed - sum(len(n) + 4 for n in names)
    values = [b"v" * (room // count + (1 if i < room % count else 0)) for i in range(count)]
    lines = [b"GET %s HTTP/1.1" % target, b"host: t", *(n + b": " + v for n, v in zip(names, values, strict=True))]
    return b"\r\n".join(lines) + b"\r\n\r\n"


@pytest.mark.parametrize("split", [False, True])
def test_a_head_of_exactly_the_limit_is_served_and_one_byte_more_is_a_431(gw: RunningGateway, split: bool) -> None:
    for size, status in ((MAX_HEAD_BYTES, 200), (MAX_HEAD_BYTES + 1, 431)):
        raw = head_of_size(size, 8)
        c = Conn(gw)
        if split:
            for i in range(0, len(raw), 7000):
                c.send(raw[i:i + 7000])
                time.sleep(0.003)
        else:
            c.send(raw)
        assert c.answer()[0] == status, size
        c.close()


def test_the_most_headers_are_served_and_one_more_is_a_431(gw: RunningGateway) -> None:
    for count, status in ((MAX_HEADERS - 1, 200), (MAX_HEADERS, 431)):  # with host: MAX_HEADERS, then one more
        c = Conn(gw)
        c.send(b"GET /health/live HTTP/1.1\r\nhost: t\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(count))
               + b"\r\n")
        assert c.answer()[0] == status, count
        c.close()


def test_many_pipelined_hits_and_misses_with_bodies_in_one_write_are_answered_in_order(gw: RunningGateway) -> None:
    expected, _ = warm(gw, "pipelined hit")
    texts = ["pipelined hit" if i % 2 else f"pipelined miss {i} " + "pad " * (i * 50) for i in range(40)]
    c = Conn(gw)
    c.send(b"".join(post(chat(t), b"x-request-id: r%d" % i) for i, t in enumerate(texts)))
    for i, text in enumerate(texts):
        status, headers, body = c.answer()
        assert status == 200 and headers["x-request-id"] == f"r{i}", (i, body)
        if text == "pipelined hit":
            assert (headers.get("x-aigw-cache"), content(body)) == ("hit", expected)
    c.close()


def test_a_pipelined_head_cut_after_a_long_prompt_in_the_same_read_is_served(gw: RunningGateway) -> None:
    """A long prompt (over the head limit) and the next request's first bytes came in one read: those bytes
    are the next head's, not the prompt's; the rest of that head comes later."""
    expected, _ = warm(gw, "after a long prompt")
    long_prompt = post(chat("long " * 16_000))  # ~80 kB
    nxt = post(chat("after a long prompt"))
    c = Conn(gw)
    c.send(long_prompt + nxt[:20])
    time.sleep(0.2)
    c.send(nxt[20:])
    assert c.answer()[0] == 200
    status, headers, body = c.answer()
    assert (status, headers.get("x-aigw-cache"), content(body)) == (200, "hit", expected)
    assert "connection" not in headers
    c.close()


def test_a_pipelined_request_whose_head_comes_in_pieces_after_the_first_answer(gw: RunningGateway) -> None:
    expected, _ = warm(gw, "pieces later")
    raw = post(chat("pieces later"))
    c = Conn(gw)
    c.send(raw + raw[:30])
    assert content(c.answer()[2]) == expected
    for i in range(30, len(raw), 11):
        c.send(raw[i:i + 11])
        time.sleep(0.002)
    status, headers, body = c.answer()
    assert (status, headers.get("x-aigw-cache"), content(body)) == (200, "hit", expected)
    c.close()


def test_expect_100_continue_on_a_hit(gw: RunningGateway) -> None:
    expected, _ = warm(gw, "expect me")
    body = chat("expect me")
    c = Conn(gw)
    for _ in range(2):
        c.send(post(body, b"expect: 100-continue")[:-len(body)])
        assert c.answer()[0] == 100
        c.send(body)
        status, headers, answer = c.answer()
        assert (status, headers.get("x-aigw-cache"), content(answer)) == (200, "hit", expected)
    c.send(post(body, b"expect: 100-continue"))  # a client that does not wait for the go-ahead
    status, headers, answer = c.answer()
    if status == 100:
        status, headers, answer = c.answer()
    assert (status, content(answer)) == (200, expected)
    c.close()


def test_http_1_0_on_a_hit_with_and_without_keep_alive(gw: RunningGateway) -> None:
    expected, _ = warm(gw, "old client")
    c = Conn(gw)
    c.send(post(chat("old client"), b"connection: keep-alive", version=b"1.0"))
    status, headers, body = c.answer()
    assert (status, headers.get("connection"), content(body)) == (200, "keep-alive", expected)
    assert headers["content-length"] == str(len(body))
    c.send(post(chat("old client"), version=b"1.0"))
    status, headers, body = c.answer()
    assert (status, content(body)) == (200, expected) and headers.get("connection") == "close"
    assert c.closed()
    c.close()


@pytest.mark.parametrize("path", [b"/health/live", b"/v1/models"])
def test_head_on_a_get_route_has_the_get_s_headers_and_no_body(gw: RunningGateway, path: bytes) -> None:
    c = Conn(gw)
    c.send(b"GET %s HTTP/1.1\r\nhost: t\r\n\r\n" % path)
    get_body = c.answer()[2]
    c.send(b"HEAD %s HTTP/1.1\r\nhost: t\r\n\r\n" % path)
    status, headers, _ = c.answer(head_only=True)
    assert status == 200 and headers.get("content-length") == str(len(get_body))
    c.send(b"GET %s HTTP/1.1\r\nhost: t\r\n\r\n" % path)  # nothing of a body was sent: the next answer is whole
    assert c.answer()[2] == get_body
    c.close()


def test_a_client_that_leaves_mid_answer_leaves_the_server_serving(gw: RunningGateway) -> None:
    expected, _ = warm(gw, "leaver")
    for _ in range(20):
        c = Conn(gw)
        c.send(post(chat("leaver")) * 5 + post(json.dumps({"model": "mock", "stream": True, "messages": [
            {"role": "user", "content": "stream " * 2000}]}).encode()))
        c.sock.recv(100)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()  # a reset, mid-answer
    c = Conn(gw)
    c.send(post(chat("leaver")))
    assert content(c.answer()[2]) == expected
    c.close()


def test_the_sdks_get_hits_through_the_server(gw: RunningGateway) -> None:
    oai = openai.OpenAI(base_url=gw.v1, api_key="k", max_retries=0)
    first = oai.chat.completions.with_raw_response.create(model="mock", max_tokens=8,
                                                          messages=[{"role": "user", "content": "sdk"}])
    for _ in range(100):
        raw = oai.chat.completions.with_raw_response.create(model="mock", max_tokens=8,
                                                            messages=[{"role": "user", "content": "sdk"}])
        if raw.headers.get("x-aigw-cache") == "hit":
            break
        time.sleep(0.02)
    assert raw.headers.get("x-aigw-cache") == "hit"
    assert raw.parse().choices[0].message.content == first.parse().choices[0].message.content
    ant = anthropic.Anthropic(base_url=gw.url, api_key="k", max_retries=0)
    one = ant.messages.create(model="mock", max_tokens=8, messages=[{"role": "user", "content": "sdk a"}])
    for _ in range(100):
        raw2 = ant.messages.with_raw_response.create(model="mock", max_tokens=8,
                                                     messages=[{"role": "user", "content": "sdk a"}])
        if raw2.headers.get("x-aigw-cache") == "hit":
            break
        time.sleep(0.02)
    assert raw2.headers.get("x-aigw-cache") == "hit"
    assert raw2.parse().content == one.content


@pytest.mark.parametrize("value", ["a\r\nset-cookie: x=1", "a\nset-cookie: x=1", "a\rset-cookie: x=1"])
@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_a_stage_header_with_a_line_break_never_splits_a_hit(gw: RunningGateway, monkeypatch: pytest.MonkeyPatch,
                                                             value: str, version: bytes) -> None:
    expected, _ = warm(gw, "broken header")
    stage = gw.app.state["pipeline"].stage("cache")
    looked_up = stage.on_request

    async def with_a_bad_header(ctx: Any) -> Any:
        result = await looked_up(ctx)
        ctx.response_headers["x-note"] = value
        return result

    monkeypatch.setattr(stage, "on_request", with_a_bad_header)
    c = Conn(gw)
    c.send(post(chat("broken header"), version=version))
    status, headers, body = c.answer()
    assert status == 500 and "set-cookie" not in headers and "x-note" not in headers, (headers, body)
    assert b"set-cookie" not in c.buf
    c.close()
    monkeypatch.undo()
    c = Conn(gw)
    c.send(post(chat("broken header")))
    assert content(c.answer()[2]) == expected
    c.close()


@pytest.fixture(scope="module")
def tenancy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, str]]:
    db = tmp_path_factory.mktemp("hit-qa-tenancy") / "gw.db"
    with running_gateway(gateway_config(db, cache={"mode": "exact", "ttl_s": 600})) as gw:
        yield gw, setup_key(AdminClient(gw.url, MASTER), "gc-co")["key"]


def _tenancy_call(conn: http.client.HTTPConnection, key: str, kind: str, i: int) -> int:
    body = {"hit": chat_body("hit me"), "miss": chat_body(f"miss {i} {time.monotonic()}"),
            "stream": chat_body(f"stream {i} {time.monotonic()}", stream=True),
            "unknown model": chat_body("x", model="no-such-model")}.get(kind)
    path = "/v1/messages" if kind == "anthropic bad json" else "/v1/chat/completions"
    conn.request("POST", path, b"{bad" if body is None else json.dumps(body).encode(),
                 {"authorization": f"Bearer {key}", "content-type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status


@pytest.mark.parametrize("kind", ["hit", "miss", "stream", "bad json", "anthropic bad json", "unknown model"])
def test_no_request_of_a_virtual_key_leaves_cyclic_garbage(tenancy: tuple[RunningGateway, str], kind: str) -> None:
    """A request's objects (its Exchange, request, context) are freed when it ends, served or refused: not left
    in a cycle (an error kept on the context held its traceback, whose frames held the context) for the GC."""
    gw, key = tenancy
    conn = http.client.HTTPConnection("127.0.0.1", int(gw.url.rsplit(":", 1)[1]), timeout=5)  # kept, as an SDK's
    for i in range(3):
        _tenancy_call(conn, key, kind, i)
    gw.call(gw.app.state["pipeline"].stage("cache").flush())
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        statuses = {_tenancy_call(conn, key, kind, i) for i in range(10)}
        time.sleep(0.3)  # the finish hooks that run after the answer
        gc.collect()
        left = sorted({type(o).__name__ for o in gc.garbage if type(o).__module__.startswith("aigw")})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        conn.close()
    assert statuses == {200 if kind in ("hit", "miss", "stream") else 404 if kind == "unknown model" else 400}
    assert left == []


def test_the_same_under_serve_workers_2(tmp_path: Path) -> None:
    """Each check again with ``aigw serve --workers 2`` (connections spread over both workers; no traceback)."""
    with serving_workers(tmp_path, CONFIG, 2) as pool:
        gw: Any = SimpleNamespace(url=pool.url)
        for _ in range(2):  # several connections: the kernel hands them to either worker
            test_a_hit_whose_head_arrives_split_at_every_byte_is_answered_each_time(gw)
            test_a_pipelined_head_cut_after_a_long_prompt_in_the_same_read_is_served(gw)
            test_a_pipelined_request_whose_head_comes_in_pieces_after_the_first_answer(gw)
            test_many_pipelined_hits_and_misses_with_bodies_in_one_write_are_answered_in_order(gw)
            test_expect_100_continue_on_a_hit(gw)
            test_http_1_0_on_a_hit_with_and_without_keep_alive(gw)
            test_a_client_that_leaves_mid_answer_leaves_the_server_serving(gw)
            for split in (False, True):
                test_a_head_of_exactly_the_limit_is_served_and_one_byte_more_is_a_431(gw, split)
            test_the_most_headers_are_served_and_one_more_is_a_431(gw)
            for path in (b"/health/live", b"/v1/models"):
                test_head_on_a_get_route_has_the_get_s_headers_and_no_body(gw, path)
