"""OpenAI's reset format (Go durations), written and read back."""

from __future__ import annotations

import pytest

from aigw.durations import go_duration, parse_go_duration


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (-1, "0s"), (0.0004, "1ms"), (0.02, "20ms"), (0.9991, "1s"), (1, "1s"), (8.64, "8.64s"),
    (12.2501, "12.251s"), (59.9999, "1m0s"), (60, "1m0s"), (90.5, "1m30.5s"), (360, "6m0s"), (3725, "1h2m5s"),
])
def test_written_as_openai_writes_it(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text  # rounded up to the millisecond; 60 s is "1m0s", never "60s"
    assert parse_go_duration(text) == pytest.approx(max(0.0, seconds), abs=0.001)


@pytest.mark.parametrize("bad", ["", "12", "s", "1x", "1s ", "-1s", "1.s"])
def test_anything_else_is_not_a_duration(bad: str) -> None:
    assert parse_go_duration(bad) is None
