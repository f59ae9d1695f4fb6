"""Slow queries over the sync protocol: their first runs go off the event loop once the
function is known to be slow, so one client's slow subscriptions hold nobody else up."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from marketpulse.reactive.limits import ConnectionLimits
from marketpulse.testing._hostile_app import hostile

from ..engine.test_offloop import loop_gaps
from .serving import serve_store


async def test_slow_first_runs_leave_the_loop_free(tmp_path: Path) -> None:
    async with serve_store(tmp_path / "s.sqlite", ConnectionLimits(), modules=[hostile]) as served:
        engine = served.engine
        slow = await served.client()
        # The first run of a function nobody has run yet is inline; it teaches the engine.
        first = await slow.subscribe("hostile:slow", {"seconds": 0.02})
        assert await slow.wait_for(first) > 0
        assert engine.runs_off_loop("hostile:slow")
        runs_before = engine.offloop.runs

        async def subscribe_all() -> list[Any]:
            ids = [
                await slow.subscribe("hostile:slow", {"seconds": 0.2 + i / 100}) for i in range(3)
            ]
            return [await slow.wait_for(q, timeout=20) for q in ids]

        run = asyncio.ensure_future(subscribe_all())
        worst = await loop_gaps(run)
        values = await run
        assert all(v > 0 for v in values) and slow.failure is None
        assert engine.offloop.runs >= runs_before + 3
        # Inline, each would have held the loop 0.2 s; off the loop it ticks (generous bound).
        assert worst < 0.15, worst
        # A subscription removed while its first run is off the loop leaves nothing behind.
        gone = await slow.subscribe("hostile:slow", {"seconds": 0.3})
        await slow.unsubscribe(gone)
        await asyncio.sleep(0.6)
        assert engine.subscription_count == 4
        await slow.close()
