"""aigw's own server against RFC 9112/9110 on requests an AI gateway meets: heads it must refuse (in the gateway's
JSON error shape, then closing), upgrade offers it ignores, and request bodies framed in the ways clients frame
them. Raw loopback sockets to a served gateway on the mock provider."""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.test_http1_hit_qa import Conn, content
from tests.support.gateway import RunningGateway


def refused(c: Conn, status: int) -> dict[str, str]:
    """The server's own refusal: ``status``, the gateway's JSON error shape, the connection closed after it."""
    got, headers, body = c.answer()
    assert got == status, body
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "api_error") and error["message"]
    assert c.closed()
    c.close()
    return dict(error)


BAD_HEADS = {
    "not http": b"NOT HTTP AT ALL\r\n\r\n",
    "obs-fold": b"GET /health/live HTTP/1.1\r\nhost: t\r\nx-a: one\r\n  two\r\n\r\n",  # RFC 9112 5.2
    "two content-lengths": b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n"
                           b"content-length: 3\r\n\r\n{}",  # RFC 9112 6.3 (5)
    "content-length and chunked": b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n"
                                  b"transfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",  # 6.3 (3): smuggling
    "chunked not last": b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
}


@pytest.mark.parametrize("raw", BAD_HEADS.values(), ids=BAD_HEADS.keys())
def test_a_malformed_head_is_a_400_in_the_gateways_error_shape_and_the_connection_closes(
        gateway: RunningGateway, raw: bytes) -> None:
    c = Conn(gateway)
    c.send(raw)
    refused(c, 400)


def test_a_head_too_large_is_a_431_in_the_gateways_error_shape(gateway: RunningGateway) -> None:
    c = Conn(gateway)
    c.send(b"GET /health/live HTTP/1.1\r\nhost: t\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n")
    refused(c, 431)


CHAT = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "Hello there"}]}).encode()


def chat_head(*lines: bytes, version: bytes = b"1.1", length: int = len(CHAT)) -> bytes:
    head = [b"POST /v1/chat/completions HTTP/%s" % version, b"content-type: application/json", *lines]
    if length >= 0:
        head.append(b"content-length: %d" % length)
    return b"\r\n".join(head) + b"\r\n\r\n"


def answered(c: Conn) -> str:
    """A chat completion's answer: a 200 with the mock's content for ``CHAT`` (its whole prompt reached it)."""
    status, _, body = c.answer()
    assert status == 200, body
    said = content(body)
    assert said.startswith("Mock answer to: Hello there"), said
    return said


HOSTLESS = {
    "no host": chat_head() + CHAT,
    "two hosts": chat_head(b"host: t", b"host: u") + CHAT,
    "two hosts on 1.0": chat_head(b"host: t", b"host: u", version=b"1.0") + CHAT,
}


@pytest.mark.parametrize("raw", HOSTLESS.values(), ids=HOSTLESS.keys())
def test_a_request_without_one_host_header_is_a_400(gateway: RunningGateway, raw: bytes) -> None:
    """RFC 9112 3.2: a 1.1 request without Host, and any with more than one, is a 400."""
    c = Conn(gateway)
    c.send(raw)
    assert "Host" in refused(c, 400)["message"]


def test_an_http_1_0_request_without_host_and_a_1_1_one_with_an_empty_host_are_served(
        gateway: RunningGateway) -> None:
    c = Conn(gateway)
    c.send(chat_head(version=b"1.0") + CHAT)
    answered(c)
    c.close()
    c = Conn(gateway)
    c.send(chat_head(b"host:") + CHAT)  # RFC 9112 3.2: empty when the target has no authority
    answered(c)
    c.close()


H2C = (b"host: t", b"connection: Upgrade, HTTP2-Settings", b"upgrade: h2c", b"http2-settings: AAMAAABkAARAAAAAAAIAAAAA")
LIVE = b"GET /health/live HTTP/1.1\r\nhost: t\r\n\r\n"


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)


@pytest.mark.parametrize("framing", ["content-length", "chunked", "head then body"])
def test_an_h2c_upgrade_offer_is_ignored_and_its_body_reaches_the_app_whole(
        gateway: RunningGateway, framing: str) -> None:
    """What some HTTP clients send (Java's HttpClient and RestClient, Ktor): the server speaks no h2c, so it
    answers over HTTP/1.1 (RFC 9110 7.8) with the whole body read, and the connection serves the next request."""
    c = Conn(gateway)
    if framing == "chunked":
        c.send(chat_head(*H2C, b"transfer-encoding: chunked", length=-1) + chunked(CHAT))
    elif framing == "head then body":
        c.send(chat_head(*H2C))
        time.sleep(0.05)
        c.send(CHAT)
    else:
        c.send(chat_head(*H2C) + CHAT)
    answered(c)
    c.send(LIVE)
    status, headers, body = c.answer()
    assert (status, json.loads(body)) == (200, {"status": "ok"}) and "connection" not in headers
    c.close()


def test_an_upgrade_offer_without_a_body_is_answered_and_the_next_request_too(gateway: RunningGateway) -> None:
    c = Conn(gateway)
    c.send(b"GET /health/live HTTP/1.1\r\n" + b"\r\n".join(H2C) + b"\r\n\r\n" + chat_head(b"host: t") + CHAT)
    status, _, body = c.answer()
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    answered(c)  # pipelined behind it, never taken for another protocol's bytes
    c.close()


@pytest.mark.parametrize("codings", [(b"gzip, chunked",), (b"gzip", b"chunked"), (b"identity, chunked",),
                                     (b", gzip,,chunked",)])
def test_a_transfer_coding_other_than_chunked_is_a_501_not_a_body_passed_on_still_coded(
        gateway: RunningGateway, codings: tuple[bytes, ...]) -> None:
    """RFC 9112 6.1: a server that does not understand a transfer coding answers 501. llhttp decodes only the
    chunked framing: the app got the body still gzip-coded."""
    c = Conn(gateway)
    c.send(chat_head(b"host: t", *(b"transfer-encoding: " + v for v in codings), length=-1) + chunked(CHAT))
    assert "chunked" in refused(c, 501)["message"]


def test_an_http_1_0_request_with_transfer_encoding_is_a_400(gateway: RunningGateway) -> None:
    """RFC 9112 6.1: 1.0 has no chunked coding, so its framing is faulty (a 1.0 proxy in front would read the
    body another way: request smuggling); the connection closes."""
    c = Conn(gateway)
    c.send(chat_head(b"host: t", b"connection: keep-alive", b"transfer-encoding: chunked", version=b"1.0",
                     length=-1) + chunked(CHAT) + LIVE)
    refused(c, 400)


def test_chunked_named_with_empty_list_elements_is_chunked(gateway: RunningGateway) -> None:
    """RFC 9110 5.6.1: empty elements of a list are ignored; ``, chunked`` is chunked, not another coding."""
    c = Conn(gateway)
    c.send(chat_head(b"host: t", b"transfer-encoding: , chunked", length=-1) + chunked(CHAT))
    answered(c)
    c.close()


def test_a_chunked_body_with_chunk_extensions_reaches_the_app_whole(gateway: RunningGateway) -> None:
    c = Conn(gateway)
    one, two = CHAT[:20], CHAT[20:]
    c.send(chat_head(b"host: t", b"transfer-encoding: chunked", length=-1)
           + b'%x;name="v;x"\r\n%b\r\n%x;n\r\n%b\r\n0;last\r\n\r\n' % (len(one), one, len(two), two))
    answered(c)
    c.close()


def test_trailer_fields_after_a_chunked_body_are_not_taken_for_headers(gateway: RunningGateway) -> None:
    """RFC 9110 6.5.1: trailers must not be merged into the header section. A trailer read as a header
    (here an invalid ``x-aigw-timeout``, a 400 if it were one) would let a client past a proxy that filters
    headers; the request is served as its head says, and the next one on the connection too."""
    c = Conn(gateway)
    trailers = b"x-aigw-timeout: soon\r\nx-checksum: abc\r\n"
    c.send(chat_head(b"host: t", b"transfer-encoding: chunked", length=-1) + chunked(CHAT)[:-2] + trailers
           + b"\r\n" + LIVE)
    answered(c)
    status, _, body = c.answer()
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    c.close()


@pytest.mark.parametrize("raw", [b"GET /health/live HTTP/2.0\r\nhost: t\r\n\r\n", b"GET /health/live\r\n\r\n"])
def test_a_request_in_an_http_version_the_server_does_not_speak_is_a_505(gateway: RunningGateway, raw: bytes) -> None:
    """RFC 9110 15.6.6: llhttp parses 2.0 request lines, and 0.9 ones (no version); the server speaks 1.0 and 1.1
    only (it answered them as if 1.x)."""
    c = Conn(gateway)
    c.send(raw)
    assert "HTTP/1.1" in refused(c, 505)["message"]


@pytest.mark.parametrize("host", [b"a b", b"a/b", b"user@a", b"a?b", b"a\tb"])
def test_a_host_header_that_is_no_host_is_a_400(gateway: RunningGateway, host: bytes) -> None:
    """RFC 9112 3.2: a Host whose value is not ``uri-host [ ":" port ]`` is a 400."""
    c = Conn(gateway)
    c.send(b"GET /health/live HTTP/1.1\r\nhost: " + host + b"\r\n\r\n")
    assert "Host" in refused(c, 400)["message"]


@pytest.mark.parametrize("host", [b"127.0.0.1:4000", b"[::1]:4000", b"gw_1.internal", b"xn--bcher-kva.example"])
def test_hosts_as_clients_send_them_are_served(gateway: RunningGateway, host: bytes) -> None:
    c = Conn(gateway)
    c.send(b"GET /health/live HTTP/1.1\r\nhost: " + host + b"\r\n\r\n")
    assert c.answer()[0] == 200
    c.close()


def test_an_h2c_offer_split_at_every_byte_is_served_each_time_on_one_connection(gateway: RunningGateway) -> None:
    raw = chat_head(*H2C) + CHAT
    c = Conn(gateway)
    for cut in range(1, len(raw)):
        c.send(raw[:cut])
        time.sleep(0.001)
        c.send(raw[cut:])
        answered(c)
    c.close()
