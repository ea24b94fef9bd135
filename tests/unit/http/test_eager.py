"""A request's coroutine run at once until it first waits, then by a Task, as if a Task had run it all along."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from aigw.http.eager import start_eagerly

seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="")


async def _from_the_loop(fn):  # as a socket's read: called by the loop, not from within a task
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(lambda: done.set_result(fn()))
    return await done


async def test_a_coroutine_that_never_waits_runs_to_its_end_at_once_and_needs_no_task():
    ran = []

    async def answer() -> None:
        ran.append(asyncio.current_task() is not None)

    task = await _from_the_loop(lambda: start_eagerly(asyncio.get_running_loop(), answer()))
    assert task is None and ran == [True]  # a task stand-in was current while it ran


async def test_one_that_waits_goes_on_in_a_task_from_where_it_waits():
    loop = asyncio.get_running_loop()
    gate = loop.create_future()
    steps: list[str] = []

    async def answer() -> None:
        steps.append("first")
        steps.append(await gate)

    task = await _from_the_loop(lambda: start_eagerly(loop, answer()))
    assert isinstance(task, asyncio.Task) and steps == ["first"]
    await asyncio.sleep(0)
    assert not task.done()  # still waiting: the task did not resume it early
    gate.set_result("second")
    await task
    assert steps == ["first", "second"]


async def test_a_timeout_entered_before_the_first_wait_cancels_the_task_that_took_over():
    outcome: list[str] = []

    async def answer() -> None:
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(5)
        except TimeoutError:
            outcome.append("timed out")
        outcome.append(f"cancelling {asyncio.current_task().cancelling()}")

    task = await _from_the_loop(lambda: start_eagerly(asyncio.get_running_loop(), answer()))
    await asyncio.wait_for(task, 2)
    assert outcome == ["timed out", "cancelling 0"]


async def test_a_task_cancelled_before_its_first_step_cancels_the_coroutine_where_it_waits():
    loop = asyncio.get_running_loop()
    cleaned: list[str] = []

    async def answer() -> None:
        try:
            await loop.create_future()
        except asyncio.CancelledError:
            cleaned.append("heard")
            raise
        finally:
            cleaned.append("finally")

    def start_and_cancel() -> asyncio.Task[None] | None:
        task = start_eagerly(loop, answer())
        assert task is not None
        task.cancel()  # in the loop turn that made it: before its first step
        return task

    task = await _from_the_loop(start_and_cancel)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["heard", "finally"]


async def test_context_variables_it_sets_stay_its_own():
    loop = asyncio.get_running_loop()
    gate = loop.create_future()
    later: list[str] = []

    async def answer() -> None:
        seen.set("request")
        await gate
        later.append(seen.get())

    task = await _from_the_loop(lambda: start_eagerly(loop, answer()))
    assert seen.get() == ""  # the caller's context is untouched
    gate.set_result(None)
    await task
    assert later == ["request"]  # and the task goes on in the context the first step used


async def test_started_from_within_a_task_that_task_is_current_again_after():
    outer = asyncio.current_task()

    async def answer() -> None:
        assert asyncio.current_task() is not outer

    assert start_eagerly(asyncio.get_running_loop(), answer()) is None
    assert asyncio.current_task() is outer


async def test_an_error_in_the_first_step_is_logged_not_raised_into_the_caller(caplog: pytest.LogCaptureFixture):
    async def answer() -> None:
        raise ValueError("broken")

    assert await _from_the_loop(lambda: start_eagerly(asyncio.get_running_loop(), answer())) is None
    assert "error answering a request" in caplog.text and "broken" in caplog.text


async def test_cancelled_before_its_first_step_the_task_it_waits_on_is_cancelled_too():
    """As a Task waiting on another Task cancels it: the work the request started (an upstream call) stops."""
    loop = asyncio.get_running_loop()
    inner_outcome: list[str] = []

    async def upstream() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            inner_outcome.append("cancelled")
            raise

    async def answer() -> None:
        await loop.create_task(upstream())

    def start_and_cancel() -> asyncio.Task[None] | None:
        task = start_eagerly(loop, answer())
        assert task is not None
        task.cancel("client gone")  # in the loop turn that made it: before its first step
        return task

    task = await _from_the_loop(start_and_cancel)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    await asyncio.sleep(0)
    assert inner_outcome == ["cancelled"]


async def test_the_task_that_takes_over_names_the_coroutine_and_where_it_waits():
    """What asyncio logs of a task ("Task was destroyed but it is pending", a stuck shutdown's dump) says which
    request handler it is and its stack, not an anonymous wrapper."""
    loop = asyncio.get_running_loop()
    gate = loop.create_future()

    async def answer_the_request() -> None:
        await gate

    task = await _from_the_loop(lambda: start_eagerly(loop, answer_the_request()))
    assert "answer_the_request() running at" in repr(task)
    assert [frame.f_code.co_name for frame in task.get_stack()] == ["answer_the_request"]
    gate.set_result(None)
    await task


async def test_a_cancel_asked_of_the_current_task_before_the_first_wait_is_heard_at_that_wait():
    """As in a Task: cancelling the current task then waiting raises CancelledError there (a cancel scope
    whose deadline has passed, a task group whose child failed at once); it was dropped, and the wait hung."""
    loop = asyncio.get_running_loop()
    outcome: list[str] = []

    async def answer() -> None:
        current = asyncio.current_task()
        assert current is not None and current.cancel("stop")
        outcome.append(f"cancelling {current.cancelling()}")
        try:
            await loop.create_future()
        except asyncio.CancelledError as exc:
            outcome.append(f"heard {exc.args[0]} {current.cancelling()}")
            raise

    task = await _from_the_loop(lambda: start_eagerly(loop, answer()))
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert outcome == ["cancelling 1", "heard stop 1"]


async def test_a_timeout_already_past_when_entered_cancels_the_task_its_first_step_awaits():
    """Its timer is due before the Task's first step (a request whose deadline was spent before it began): the
    work awaited (an upstream call in a task) is cancelled with it, not left running."""
    loop = asyncio.get_running_loop()
    outcome: list[str] = []

    async def upstream() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            outcome.append("upstream cancelled")
            raise

    async def answer() -> None:
        try:
            async with asyncio.timeout(0):
                await loop.create_task(upstream())
        except TimeoutError:
            outcome.append("timed out")

    task = await _from_the_loop(lambda: start_eagerly(loop, answer()))
    await asyncio.wait_for(task, 2)
    await asyncio.sleep(0)
    assert outcome == ["upstream cancelled", "timed out"]
