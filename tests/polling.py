"""Waiting for a condition in tests, with a timeout that names what was awaited: ``until`` and
``eventually`` in async tests, ``wait_until`` in tests that drive real processes from
synchronous code."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

INTERVAL_S = 0.02


async def until(
    cond: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = "the condition"
) -> None:
    """Poll ``cond`` every 20 ms until it holds; fail the test after ``timeout`` seconds.

    ``cond`` may be a coroutine function (a condition that has to ask a server).
    """

    async def holds() -> bool:
        result = cond()
        return bool(await result) if inspect.isawaitable(result) else bool(result)

    await eventually(holds, bool, timeout, what)


async def eventually(
    fetch: Callable[[], Awaitable[T]],
    pred: Callable[[T], bool],
    timeout: float = 10.0,
    what: str = "the value",
) -> T:
    """Fetch a value every 20 ms until ``pred`` accepts it, and return it; fail the test after
    ``timeout`` seconds, showing the last value fetched."""
    value = await fetch()
    try:
        async with asyncio.timeout(timeout):
            while not pred(value):
                await asyncio.sleep(INTERVAL_S)
                value = await fetch()
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout:g}s waiting for {what}; last: {value!r}"
        ) from None
    return value


def wait_until(
    cond: Callable[[], bool], timeout: float = 10.0, what: str = "the condition"
) -> float:
    """Block, polling ``cond`` every 20 ms, until it holds, and return the seconds that took;
    fail the test after ``timeout`` seconds."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(INTERVAL_S)
    return time.monotonic() - start
