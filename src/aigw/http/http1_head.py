"""A request head's checks on aigw's HTTP/1.1 server: how big a head and how many headers, and the errors the
parser's callbacks raise to refuse one; ``http1_connection`` answers each with its status, in the gateway's JSON
error shape (``refusal_body``), and closes the connection.

A head is measured once it is whole (``head_size``); while it is still arriving, its reads are counted as they
come, so a client trickling header lines is refused at the limit instead of buffered without end.
"""

from __future__ import annotations

import orjson

from aigw import errors
from aigw.http.wire_openai import error_body

MAX_HEAD_BYTES = 64 * 1024  # request line plus headers; more gets 431
MAX_HEADERS = 200
# what ``uri-host [ ":" port ]`` is made of (RFC 3986: unreserved, pct-encoded, sub-delims, an IP literal's brackets)
HOST_BYTES = bytes(range(48, 58)) + bytes(range(65, 91)) + bytes(range(97, 123)) + b"-._~%!$&'()*+,;=:[]"


class Refused(Exception):
    """A request the server answers itself with ``status`` and ``message`` (then closes the connection)."""

    status = 400
    message = "Invalid HTTP request."

    def __init__(self, message: str | None = None) -> None:
        if message is not None:
            self.message = message
        super().__init__(self.message)


class HeadTooLarge(Refused):
    status = 431
    message = "Request header fields too large."


class UrlTooLong(HeadTooLarge):
    status = 414  # RFC 9112 3: a request-target too long to parse
    message = "Request target too long."


class CodingNotImplemented(Refused):
    status = 501  # RFC 9112 6.1: a transfer coding the server does not understand
    message = "Only the chunked transfer coding is supported."


class VersionNotSupported(Refused):
    status = 505  # llhttp parses 0.9 (a request line without a version) and 2.0 too
    message = "This server speaks HTTP/1.1 and HTTP/1.0 only."


def check(version: str, url: bytes, headers: list[tuple[bytes, bytes]], measure: bool) -> None:
    """A whole head's checks: its size (``measure``: counted exactly, as when the head spanned reads, since
    ``head_bytes`` may miss part of its first, or its read was big) and header count; then what llhttp leaves
    to its user: a version this server speaks and, in one pass over its ~15 headers (~0.5 µs), one Host header
    with a host for its value (RFC 9112 3.2: a 1.1 request without one, or any with more, is a 400) and a
    transfer coding it can decode."""
    if len(headers) > MAX_HEADERS or (measure and head_size(url, headers) > MAX_HEAD_BYTES):
        raise HeadTooLarge()
    if version != "1.1" and version != "1.0":
        raise VersionNotSupported()
    hosts = 0
    coding = host = None
    for name, value in headers:
        if name == b"host":
            hosts += 1
            host = value
        elif name == b"transfer-encoding":
            coding = value if coding is None else coding + b"," + value
    if hosts != 1 and (hosts or version != "1.0"):
        raise Refused("A request must carry exactly one Host header." if hosts else
                      "An HTTP/1.1 request must carry a Host header.")
    if host and host.translate(None, HOST_BYTES):  # (empty is allowed: 3.2)
        raise Refused("The Host header is not a host name and port.")
    if coding is not None:
        _check_coding(version, coding)


def _check_coding(version: str, coding: bytes) -> None:
    """llhttp decodes chunked framing only and hands any coding before it on undone (``gzip, chunked``: the app
    got gzip bytes): a 501. Chunked not last, or twice, it refuses itself, once the app heard of the request.
    HTTP/1.0 has no chunked coding: its framing is faulty (6.1), a smuggling risk behind a 1.0 proxy: a 400."""
    if version == "1.0":
        raise Refused("An HTTP/1.0 request cannot carry Transfer-Encoding.")
    codings = [c for c in coding.lower().replace(b" ", b"").replace(b"\t", b"").split(b",") if c]  # (empty: 9110 5.6.1)
    if len(codings) > 1 and codings[-1] == b"chunked" and b"chunked" not in codings[:-1]:
        raise CodingNotImplemented()


class DroppedFields(list[tuple[bytes, bytes]]):
    """Where a chunked body's trailer fields go, once the head's fields are the app's: nowhere. RFC 9110 6.5.1:
    never merged into the header section (one read as a header would get past a proxy that filters headers),
    and nothing in the gateway reads them; kept, a client could grow them without end."""

    def append(self, field: tuple[bytes, bytes]) -> None:
        pass


TRAILERS = DroppedFields()  # holds nothing, ever: shared by every connection


def refused_by(exc: Exception) -> Refused:
    """What a parser error refuses: a check of ours that raised in a callback, else llhttp's own finding."""
    why = exc.__cause__ or exc.__context__
    return why if isinstance(why, Refused) else Refused()


def refusal_body(status: int, message: str) -> bytes:
    """The body of the server's own answer: the gateway's JSON error shape, as the app's errors have it."""
    err = errors.InvalidRequest(message, status=status) if status < 500 else errors.GatewayError(message)
    return orjson.dumps(error_body(err))


def head_size(url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """A request head's size as counted against ``MAX_HEAD_BYTES`` (measured only when its reads were that big)."""
    return len(url) + sum(len(name) + len(value) + 4 for name, value in headers)


def charged(so_far: int, begun_mid_read: bool, read: int, url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """What a head still arriving has cost after one more read of ``read`` bytes: the whole read, but for a head
    begun partway through its first read (after another request's long body) only its own parsed part (not 0:
    it spans reads, so it is measured exactly once whole)."""
    return (head_size(url, headers) or 1) if begun_mid_read else so_far + read
