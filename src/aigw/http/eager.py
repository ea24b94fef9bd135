"""Run a request's coroutine at once, in the callback that received the request, until it first waits.

Why: a request answered without waiting (a cache hit from memory, a refusal) needs no Task, and a Task per
request is ~8 % of a cache hit's instructions (its creation, its registration, a loop turn before it starts).
Python 3.12's eager task factory does this; 3.11 has none, so this is the same idea: the coroutine's first
step runs now, and only if it waits does a Task run the rest (from where it waits, with the same context).

While the first step runs, ``asyncio.current_task()`` is a stand-in that hands ``cancel``, ``cancelling``
and ``uncancel`` to the Task that takes over, so ``asyncio.timeout`` (and every other timer that cancels its
task) entered before the first wait cancels the right task when it fires, which can only be after that wait.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine, Generator
from typing import Any

log = logging.getLogger("aigw.http.server")

_enter_task = asyncio.tasks._enter_task
_leave_task = asyncio.tasks._leave_task
_current_task = asyncio.current_task


class _StandIn:
    """``current_task()`` during an eager first step: the Task that runs the rest, once there is one."""

    __slots__ = ("asked", "task")  # no __init__: one is made per request, and a Python __init__ is most of its cost

    task: asyncio.Task[Any] | None
    asked: list[Any] | None  # cancels asked for before the Task exists (their messages): the Task gets them

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.task.get_loop() if self.task is not None else asyncio.get_running_loop()

    def cancel(self, msg: Any = None) -> bool:
        if self.task is not None:
            return self.task.cancel(msg)
        if self.asked is None:
            self.asked = []
        self.asked.append(msg)  # the coroutine hears it where it first waits, as a Task's would
        return True

    def cancelling(self) -> int:
        if self.task is not None:
            return self.task.cancelling()
        return len(self.asked) if self.asked is not None else 0

    def uncancel(self) -> int:
        if self.task is not None:
            return self.task.uncancel()
        if self.asked:
            self.asked.pop()
        return len(self.asked) if self.asked is not None else 0

    def done(self) -> bool:
        return self.task.done() if self.task is not None else False

    def __getattr__(self, name: str) -> Any:  # anything else a library asks of its task
        if self.task is None:
            raise AttributeError(f"{name} (the request's task does not exist yet: it has not waited)")
        return getattr(self.task, name)


class _Resumed(Coroutine[Any, Any, Any]):
    """A coroutine stopped at its first wait, as a Task runs it: the Task's first step waits on what the
    coroutine waits on (it does not resume it), later steps and any cancellation go to the coroutine."""

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self.coro = coro
        self.waiting: Any = waiting  # what the first step yielded; _STARTED once the Task has it

    def send(self, value: Any) -> Any:
        waiting = self.waiting
        if waiting is not _STARTED:
            self.waiting = _STARTED
            return waiting
        return self.coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        waiting = self.waiting
        if waiting is not _STARTED:  # cancelled before the Task's first step: what a waiting Task does, cancel
            self.waiting = _STARTED  # what it waits on (a Task it awaits stops too), else the coroutine hears it
            if isinstance(typ, asyncio.CancelledError) and isinstance(waiting, asyncio.Future) \
                    and waiting.cancel(typ.args[0] if typ.args else None):
                return waiting  # the Task waits for it, and the coroutine gets its CancelledError from it
        if val is None and tb is None:
            return self.coro.throw(typ)
        return self.coro.throw(typ, val, tb)

    def close(self) -> None:
        self.coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        raise TypeError("run by a Task only")

    def __getattr__(self, name: str) -> Any:  # cr_frame, cr_code, __qualname__: the Task's repr and get_stack()
        return getattr(self.coro, name)  # name the coroutine and where it waits, as for a Task that ran it all

    def __repr__(self) -> str:
        return repr(self.coro)


_STARTED = object()


def start_eagerly(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` until it first waits: None if it finished meanwhile, else the Task that runs the rest.

    An exception it raises in that step is logged (a Task would have kept it: nobody reads it either way)."""
    context = contextvars.copy_context()  # its own, as a Task's: context variables it sets stay its own
    stand_in = _StandIn()
    stand_in.task = stand_in.asked = None
    outer = _current_task(loop)  # called from within a task (a test, say)
    if outer is not None:
        _leave_task(loop, outer)
    _enter_task(loop, stand_in)  # type: ignore[arg-type]  # it acts as one
    try:
        waiting = context.run(coro.send, None)
    except StopIteration:
        return None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        log.exception("error answering a request")
        return None
    finally:
        _leave_task(loop, stand_in)  # type: ignore[arg-type]
        if outer is not None:
            _enter_task(loop, outer)
    task = stand_in.task = loop.create_task(_Resumed(coro, waiting), context=context)  # type: ignore[arg-type]
    if stand_in.asked:  # cancelled (by itself) before it waited: the Task starts cancelled, as it would have been
        for msg in stand_in.asked:
            task.cancel(msg)
    return task
