"""Waiting for a condition in async tests, with a timeout that names what was awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(
    cond: Callable[[], bool], timeout: float = 10.0, what: str = "the condition"
) -> None:
    """Poll ``cond`` every 20 ms until it holds; fail the test after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}") from None
