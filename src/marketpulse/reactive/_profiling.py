"""An opt-in profile of the serving thread: ``MARKETPULSE_PROFILE=<file>`` on ``serve``.

Whatever holds the event loop (handshakes, timers, parsing, re-runs) shows up here: every
client waits for it. pyinstrument (a statistical profiler, 1 ms samples, little overhead)
writes a call tree as text; without it, cProfile writes ``pstats`` data. Either way, the loop
callbacks that each held the loop longest are listed in ``<file>.slow`` (a tail latency is one
long callback, which a profile's totals hide). Written when the server stops.
"""

from __future__ import annotations

import asyncio.events
import contextlib
import cProfile
import heapq
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["profiled"]

_KEEP = 200
_SLOW_S = 0.005


@contextlib.contextmanager
def _slow_callbacks(path: Path) -> Iterator[None]:
    """Time every loop callback; write the longest ones (and a count per kind) to ``path``."""
    handle = asyncio.events.Handle
    original = handle._run
    worst: list[tuple[float, str]] = []
    kinds: dict[str, list[float]] = {}

    def timed(self: Any) -> None:
        started = time.perf_counter()
        original(self)
        took = time.perf_counter() - started
        if took >= _SLOW_S:
            name = repr(self._callback)[:160]
            kind = getattr(self._callback, "__qualname__", name)
            kinds.setdefault(kind, []).append(took)
            if len(worst) < _KEEP:
                heapq.heappush(worst, (took, name))
            else:
                heapq.heappushpop(worst, (took, name))

    handle._run = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        handle._run = original  # type: ignore[method-assign]
        lines = [f"callbacks over {_SLOW_S * 1000:g} ms, by kind: count, total ms, max ms"]
        for kind, took in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
            lines.append(f"{len(took):6d} {sum(took) * 1000:9.1f} {max(took) * 1000:7.1f}  {kind}")
        lines.append("longest:")
        lines += [f"{took * 1000:7.1f} ms  {name}" for took, name in sorted(worst, reverse=True)]
        path.write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def profiled(path: str | None) -> Iterator[None]:
    """Profile this thread while the block runs and write the result to ``path``.

    Args:
        path: where to write; ``None`` or empty: no profile, no cost.
    """
    if not path:
        yield
        return
    with _slow_callbacks(Path(path + ".slow")):
        try:
            from pyinstrument import Profiler
        except ImportError:
            profile = cProfile.Profile()
            profile.enable()
            try:
                yield
            finally:
                profile.disable()
                profile.dump_stats(path)
            return
        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
        try:
            yield
        finally:
            profiler.stop()
            Path(path).write_text(profiler.output_text(unicode=False, show_all=False))
