"""An upgrade offer on aigw's HTTP/1.1 server (``Upgrade: h2c`` from Java's HttpClient and RestClient or Ktor, a
websocket handshake): ignored, as RFC 9110 7.8 lets a server do; the request is served over HTTP/1.1, its body
read whole, and the connection kept for the next one.

llhttp takes a request with ``Connection: upgrade`` and ``Upgrade`` for a switch of protocol: it stops at the end
of the head, skips the body (httptools asks it to) and pauses, leaving what follows, the body too, to the other
protocol. So the connection makes no request of such a head but keeps it, less its ``upgrade`` field
(``replayed_head``); when the parser pauses, a fresh one is fed that head and then the bytes after it (``resume``),
and parses the request (and any behind it) as any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httptools

from aigw.http.http1_head import Refused, refused_by

if TYPE_CHECKING:
    from aigw.http.http1_connection import Connection


def resume(conn: Connection, data: bytes | memoryview, at: int) -> Refused | None:
    """The parser of ``conn`` paused at ``at`` in ``data`` on an upgrade offer: parse the offer again as a plain
    request with a fresh parser, then the rest of the read; what refuses a request, if anything. A loop, not a
    call again per offer: a read may hold thousands of them."""
    pieces: list[bytes | memoryview] = []
    while True:
        head, conn.upgrade_head = conn.upgrade_head, None
        if head is None:  # CONNECT: there is no request to serve
            return Refused("CONNECT is not supported.")
        conn.parser = httptools.HttpRequestParser(conn)
        pieces += (memoryview(data)[at:], head)  # the head first, then what followed it
        while pieces:
            data = pieces.pop()
            try:
                conn.parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:  # another offer, pipelined behind
                at = exc.args[0]
                break
            except httptools.HttpParserError as exc:
                return refused_by(exc)
        else:
            return None


def replayed_head(method: bytes, url: bytes, version: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The head of an upgrade offer as a plain request: the same, without the ``upgrade`` field."""
    lines = [b"%s %s HTTP/%s" % (method, url, version.encode())]
    lines += [name + b": " + value for name, value in headers if name != b"upgrade"]
    return b"\r\n".join(lines) + b"\r\n\r\n"
