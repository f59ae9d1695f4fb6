"""asyncio helpers: cancellation that stays intact, and work that yields its turn fairly.

Cancellation.

Python 3.11's ``asyncio.wait_for`` returns the inner result when the caller is cancelled in the
same loop turn as that result arrives, and so swallows the cancellation (CPython gh-86296, fixed
by 3.12's rewrite on ``asyncio.timeout``). A task that loops over awaited calls, such as the
stream's batch writer, then never ends and whoever awaits it hangs. ``asyncio.timeout`` has no
such race, so the code base uses it (ruff bans ``asyncio.wait_for`` in ``src/``), and
:func:`cancel_and_wait` stops child tasks without eating the caller's own cancellation the way
``suppress(CancelledError)`` around ``await child`` does.

Yielding. Work done a slice per loop turn (a fan-out, deferred re-runs, a keepalive pass)
must let what came due during a slice run before its next slice. ``call_soon`` and
``asyncio.sleep(0)`` do not: asyncio runs, each turn, first the callbacks scheduled with
``call_soon`` during the previous turn, then those of the I/O that turn's ``select`` found,
then the timers due. So a continuation scheduled with ``call_soon`` runs ahead of the very
I/O and timers that waited for its previous slice, and they wait two slices. A continuation
scheduled as a timer due now (:func:`call_after_waiting`, :func:`yield_to_waiting`) joins the
next turn behind the I/O and behind every timer that came due before it: what waited, waits
one slice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVarTuple

__all__ = ["call_after_waiting", "cancel_and_wait", "yield_to_waiting"]


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel ``tasks`` and wait until every one has finished.

    The tasks' own outcomes (cancelled, failed) are dropped: the caller is stopping them. If the
    caller itself is cancelled while it waits, that CancelledError propagates.

    Args:
        *tasks: Tasks or futures to stop; ``None`` entries are skipped.
    """
    current = asyncio.current_task()
    # Already-requested cancellations (we may be cleaning up after one) are not "new".
    before = current.cancelling() if current is not None else 0
    pending = [t for t in tasks if t is not None]
    for t in pending:
        t.cancel()
    for t in pending:
        try:
            await t
        except asyncio.CancelledError:
            if not t.done() or (current is not None and current.cancelling() > before):
                raise
        except Exception:  # the child's failure is not the caller's: it asked it to stop
            pass


_Ts = TypeVarTuple("_Ts")


def call_after_waiting(callback: Callable[[*_Ts], object], *args: *_Ts) -> asyncio.TimerHandle:
    """Schedule ``callback(*args)`` for the next loop turn, behind the I/O callbacks and the
    timers due by then (``call_soon`` would run it ahead of them; see the module docstring).

    Returns:
        The handle, to cancel it.
    """
    loop = asyncio.get_running_loop()
    return loop.call_at(loop.time(), callback, *args)


async def yield_to_waiting() -> None:
    """Let the I/O callbacks and the timers due now run before this task goes on (where
    ``await asyncio.sleep(0)`` would resume it ahead of them)."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    call_after_waiting(_wake, done)
    await done


def _wake(done: asyncio.Future[None]) -> None:
    if not done.done():  # cancelled meanwhile
        done.set_result(None)
