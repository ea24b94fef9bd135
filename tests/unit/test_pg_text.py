"""``pg_rows``: what a PostgreSQL writer sends for rows whose text holds NUL."""

from __future__ import annotations

from aigw.pg_text import pg_row, pg_rows, pg_text


def test_nul_in_any_string_becomes_the_replacement_character_and_nothing_else_changes() -> None:
    row = ("sp_1", "gpt\x00evil\x00", 3, 1.5, None, b"\x00", "mock")
    assert pg_row(row) == ("sp_1", "gpt\ufffdevil\ufffd", 3, 1.5, None, b"\x00", "mock")
    assert pg_text("a\x00b") == "a\ufffdb" and pg_text("plain") == "plain"
    assert pg_rows([("ok", 1), row]) == [("ok", 1), pg_row(row)]


def test_a_row_without_nul_is_passed_on_as_it_is() -> None:
    row = ("sp_1", "gpt-4o", 3, "", None)
    assert pg_row(row) is row  # no copy per row in the usual case (the writer's batches are large)
    rows = [row, ("sp_2", None, b"\x00")]
    assert pg_rows(rows) is rows
