"""cancel_and_wait: children stop, their outcome is dropped, the caller's cancellation is not.
call_after_waiting / yield_to_waiting: a slice's continuation runs behind what waited for it."""

from __future__ import annotations

import asyncio

import pytest

from marketpulse._aio import call_after_waiting, cancel_and_wait, yield_to_waiting
from spinning import spin


async def test_children_are_stopped_and_their_outcomes_dropped() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    async def fails() -> None:
        raise RuntimeError("child failure")

    failing = asyncio.create_task(fails())
    await asyncio.sleep(0)
    sleeping = asyncio.create_task(forever())
    await cancel_and_wait(sleeping, None, failing)
    assert sleeping.cancelled() and failing.done()


async def test_the_callers_own_cancellation_propagates_while_a_child_is_slow_to_stop() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()  # cleanup that takes a while

    child = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(cancel_and_wait(child))
    await asyncio.sleep(0.01)
    stopper.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await stopper


async def test_a_cancellation_in_the_turn_the_child_ends_is_not_swallowed() -> None:
    child_done = asyncio.Event()

    async def child() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            child_done.set()

    c = asyncio.create_task(child())
    await asyncio.sleep(0)

    async def stop_then_work() -> None:
        await cancel_and_wait(c)
        await asyncio.Event().wait()  # would hang forever if the cancellation were lost

    stopper = asyncio.create_task(stop_then_work())
    await child_done.wait()  # the child is finishing in this very turn
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await stopper


async def test_cleanup_during_the_callers_own_cancellation_still_completes() -> None:
    # A finally block that runs because the caller is being cancelled stops its children
    # fully (the caller's pending cancellation is not a new one).
    child = asyncio.create_task(asyncio.Event().wait())
    stopped: list[bool] = []

    async def owner() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await cancel_and_wait(child)
            stopped.append(child.cancelled())

    task = asyncio.create_task(owner())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stopped == [True]


async def test_a_continuation_runs_behind_the_timer_that_came_due_during_its_slice() -> None:
    loop = asyncio.get_running_loop()
    order: list[str] = []

    def slice_(n: int) -> None:
        order.append(f"slice {n}")
        if n == 1:
            loop.call_at(loop.time(), order.append, "timer")  # due before the slice ends
            spin(0.002)
            call_after_waiting(slice_, 2)

    loop.call_soon(slice_, 1)
    while len(order) < 3:
        await asyncio.sleep(0.001)
    assert order == ["slice 1", "timer", "slice 2"]
    # What call_soon would have done instead: the continuation first.
    order.clear()
    loop.call_at(loop.time(), order.append, "timer")
    spin(0.002)
    loop.call_soon(order.append, "soon")
    await asyncio.sleep(0.01)
    assert order == ["soon", "timer"]


async def test_a_task_that_yields_lets_the_due_timer_run_first() -> None:
    loop = asyncio.get_running_loop()
    order: list[str] = []

    async def worker() -> None:
        loop.call_at(loop.time(), order.append, "timer")
        spin(0.002)
        await yield_to_waiting()
        order.append("worker")

    await asyncio.create_task(worker())
    assert order == ["timer", "worker"]


async def test_a_task_cancelled_while_it_yields_is_cancelled() -> None:
    task = asyncio.create_task(yield_to_waiting())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.005)  # the wake-up finds the future cancelled and does nothing
