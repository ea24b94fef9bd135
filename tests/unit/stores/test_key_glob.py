"""Key patterns: Redis's SCAN MATCH syntax, matched the same way in process memory."""

from __future__ import annotations

from aigw.stores.key_glob import escape, matcher


def test_a_star_spans_any_run_and_the_rest_is_literal() -> None:
    match = matcher(["t1:*", "t1/*:aaaa.*"])
    assert match("t1:aaaa.x") and match("t1:") and match("t1/k/key_1:aaaa.y")
    assert not match("t10:aaaa.x") and not match("t1/k/key_1:bbbb.y") and not match("xt1:a")


def test_escaped_text_matches_only_itself() -> None:
    odd = "t[1]*?\\x"
    match = matcher([escape(odd) + ":*"])
    assert match(odd + ":abc")
    assert not match("t1:abc") and not match("tX]*?\\x:abc") and not match("t[1]zz?\\x:abc")


def test_no_pattern_matches_nothing() -> None:
    assert not matcher([])("anything")
