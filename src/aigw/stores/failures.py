"""How a store call failed, as the callers must tell apart: skipped in an outage (nothing ran), owed for
later, sent and unanswered (it may have run), or refused by a full Redis (nothing ran, reads still work)."""

from __future__ import annotations

from asyncio import Future
from typing import Any

OOM_REPLY = "> 'maxmemory'"  # in Redis's refusal: "OOM command not allowed when used memory > 'maxmemory'."


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing a write because it is full (``maxmemory`` reached under
    ``maxmemory-policy noeviction``), or a step skipped for that: Redis answers, nothing of the call ran,
    and reads still work. Told by the reply's text, which the lean client and redis-py both keep."""
    return OOM_REPLY in str(exc)


class StoreSkipped(ConnectionError):
    """A store call not made: the store failed moments ago and is not tried again until its skip window
    ends (so an outage costs its timeout once per window, not on every call). Nothing ran in the store:
    a step that raised this has nothing to settle."""


class SettleOwed(StoreSkipped):
    """A settle (``Gate.leave``) skipped in the store's skip window, but kept: it is sent once the store answers
    again, exactly once (it never ran). ``later`` gets what ``leave`` returns (the budget thresholds crossed)
    when it has run; it is cancelled when the settle is given up (dropped from a full queue). One sent and not
    answered may have run, and is not sent again: ``later`` then gets the thresholds it crossed if it ran, read
    back from the store (as ``SettleUnanswered.later``)."""

    def __init__(self, message: str, later: Future[Any]) -> None:
        super().__init__(message)
        self.later = later


class SettleUnanswered(ConnectionError):
    """A settle (``Gate.leave``) sent and not answered (a timeout, a lost connection): it may have run all the
    same, and is never sent again. ``later`` gets the budget thresholds it crossed if it ran, once the store
    answers again and tells (as ``SettleOwed.later``); it is cancelled when that cannot be told in time."""

    def __init__(self, message: str, later: Future[Any]) -> None:
        super().__init__(message)
        self.later = later
