"""A clock tests move by hand, for code that takes an ``aigw.types.Clock`` (one copy instead of one per test file)."""

from __future__ import annotations


class ManualClock:
    """Wall and monotonic time both read ``t``, which a test sets or moves (``advance``); nothing else moves it."""

    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
