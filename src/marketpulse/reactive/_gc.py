"""Short full garbage collections for a server holding many long-lived objects.

CPython's full (generation 2) collection walks every tracked object that is not frozen. A store
with 10,000 sockets holds hundreds of thousands of them (sockets, parsers, subscriptions,
documents). Each full pass stalled every push for up to 284 ms (``bench/fanout.py`` with a
``gc.callbacks`` probe), and such passes come every few seconds while clients connect.

Nearly everything that survives a full collection is long-lived. So after each one, the
survivors are frozen (``gc.freeze``), and the next full pass walks only what was promoted since.
Frozen objects are still freed by reference counting the moment nothing refers to them. Only a
reference cycle among frozen objects would wait, so every ``sweep_interval`` everything is
unfrozen, collected once, and frozen again. That is one full pass per sweep instead of one every
few seconds.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

__all__ = ["SurvivorFreezer"]


class SurvivorFreezer:
    """Freezes the survivors of every full collection; sweeps everything now and then.

    Args:
        loop: the server's event loop (freezing happens on it, never inside a collection).
        sweep_interval: seconds between full unfrozen collections (cycles among long-lived
            objects are reclaimed then).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sweep_interval: float = 600.0) -> None:
        self._loop = loop
        self._sweep_interval = sweep_interval
        self._scheduled = False
        self._sweeper: asyncio.TimerHandle | None = None
        self.freezes = 0
        self.sweeps = 0

    def start(self) -> None:
        """Freeze what is alive now and watch the collector from here on."""
        gc.collect()
        gc.freeze()
        gc.callbacks.append(self._on_gc)
        self._sweeper = self._loop.call_later(self._sweep_interval, self._sweep)

    def stop(self) -> None:
        """Stop watching; frozen objects stay frozen (the process is ending)."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._sweeper is not None:
            self._sweeper.cancel()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector, on whatever thread triggered it: only schedule.
        if phase == "stop" and info.get("generation") == 2 and not self._scheduled:
            self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._freeze)
            except RuntimeError:  # the loop is closed
                self._scheduled = False

    def _freeze(self) -> None:
        self._scheduled = False
        gc.freeze()
        self.freezes += 1

    def _sweep(self) -> None:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.sweeps += 1
        self._sweeper = self._loop.call_later(self._sweep_interval, self._sweep)
