"""A request head's limits on aigw's HTTP/1.1 server: how big a head and how many headers, and the errors the
parser's callbacks raise to refuse one (``http1_connection`` answers them 431 or 414).

A head is measured once it is whole (``head_size``); while it is still arriving, its reads are counted as they
come, so a client trickling header lines is refused at the limit instead of buffered without end.
"""

from __future__ import annotations

MAX_HEAD_BYTES = 64 * 1024  # request line plus headers; more gets 431
MAX_HEADERS = 200


class HeadTooLarge(Exception):
    pass


class UrlTooLong(HeadTooLarge):
    pass


def head_size(url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """A request head's size as counted against ``MAX_HEAD_BYTES`` (measured only when its reads were that big)."""
    return len(url) + sum(len(name) + len(value) + 4 for name, value in headers)


def charged(so_far: int, begun_mid_read: bool, read: int, url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """What a head still arriving has cost after one more read of ``read`` bytes: the whole read, but for a head
    begun partway through its first read (after another request's long body) only its own parsed part (not 0:
    it spans reads, so it is measured exactly once whole)."""
    return (head_size(url, headers) or 1) if begun_mid_read else so_far + read
