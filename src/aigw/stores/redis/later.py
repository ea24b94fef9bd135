"""Futures of what a settle's caller learns later: the thresholds a settle owed or unanswered crossed, once known."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any


def after(step: asyncio.Future[Any], read: Callable[[], asyncio.Future[Any]]) -> asyncio.Future[Any]:
    """A future of ``read()``'s result, started once ``step`` ended however it ended (its error is retrieved)."""
    out: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def done(f: asyncio.Future[Any]) -> None:
        if not f.cancelled():
            f.exception()
        if not out.done():
            read().add_done_callback(partial(_pass_on, out))
    step.add_done_callback(done)
    return out


def then(reply: asyncio.Future[Any], convert: Callable[[Any], Any],
          unanswered: Callable[[], asyncio.Future[Any]]) -> asyncio.Future[Any]:
    """A future of ``convert(reply's result)``, cancelled with ``reply``; when ``reply`` fails (an owed settle
    sent and not answered: it may have run), it takes the result of ``unanswered()`` instead."""
    out: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def done(f: asyncio.Future[Any]) -> None:
        if out.done():
            return
        if f.cancelled():
            out.cancel()
        elif f.exception() is not None:
            unanswered().add_done_callback(partial(_pass_on, out))
        else:
            out.set_result(convert(f.result()))
    reply.add_done_callback(done)
    return out


def _pass_on(out: asyncio.Future[Any], f: asyncio.Future[Any]) -> None:
    """``f``'s outcome (a result or a cancel) handed to ``out``, unless ``out`` ended first."""
    if not out.done():
        out.cancel() if f.cancelled() else out.set_result(f.result())
