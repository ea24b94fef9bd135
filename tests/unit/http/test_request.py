"""``HttpRequest``: the inbound headers as handlers read them (lower-case names, latin-1 text, a name sent on
several lines joined as HTTP reads it)."""

from __future__ import annotations

from aigw.http.request import HttpRequest


def headers_of(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return HttpRequest({"method": "POST", "path": "/v1/chat/completions", "headers": raw}, None).headers


def test_headers_become_text_in_order_with_empty_values_and_latin_1_bytes() -> None:
    raw = [(b"host", b"127.0.0.1:4000"), (b"authorization", b"Bearer sk-1"), (b"x-empty", b""),
           (b"x-accent", "café".encode("latin-1"))] + [(b"x-stainless-%d" % i, b"v%d" % i) for i in range(15)]
    got = headers_of(raw)
    assert list(got) == [name.decode() for name, _ in raw]
    assert (got["authorization"], got["x-empty"], got["x-accent"], got["x-stainless-14"]) == (
        "Bearer sk-1", "", "café", "v14")


def test_no_headers_at_all() -> None:
    assert headers_of([]) == {}


def test_a_name_sent_on_several_lines_is_joined_and_cookies_with_semicolons() -> None:
    got = headers_of([(b"accept", b"a"), (b"cookie", b"x=1"), (b"accept", b"b"), (b"cookie", b"y=2")])
    assert got == {"accept": "a, b", "cookie": "x=1; y=2"}


def test_a_line_break_inside_a_value_never_shifts_the_values_of_other_headers() -> None:
    """No HTTP/1 parser passes one, but the headers must still pair up if a server ever did."""
    got = headers_of([(b"x-a", b"1\n2"), (b"authorization", b"Bearer sk-1")])
    assert got == {"x-a": "1\n2", "authorization": "Bearer sk-1"}
