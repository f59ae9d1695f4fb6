"""asyncio helpers that keep a task's own cancellation intact.

Python 3.11's ``asyncio.wait_for`` returns the inner result when the caller is cancelled in the
same loop turn as that result arrives, and so swallows the cancellation (CPython gh-86296, fixed
by 3.12's rewrite on ``asyncio.timeout``). A task that loops over awaited calls, such as the
stream's batch writer, then never ends and whoever awaits it hangs. ``asyncio.timeout`` has no
such race, so the code base uses it (ruff bans ``asyncio.wait_for`` in ``src/``), and
:func:`cancel_and_wait` stops child tasks without eating the caller's own cancellation the way
``suppress(CancelledError)`` around ``await child`` does.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


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
