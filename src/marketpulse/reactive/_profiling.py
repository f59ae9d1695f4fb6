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
import gc
import heapq
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["profiled"]

_KEEP = 200
_SLOW_S = 0.005


def _describe(callback: Any) -> tuple[str, str]:
    """A callback's description and its kind; a task's steps are named by its coroutine."""
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        kind = f"task {getattr(coro, '__qualname__', type(coro).__name__)}"
        return kind, kind
    return repr(callback)[:160], getattr(callback, "__qualname__", type(callback).__name__)


@contextlib.contextmanager
def _slow_callbacks(path: Path) -> Iterator[None]:
    """Time every loop callback; write the longest ones (and a total per kind) to ``path``.

    CPU time of this thread, besides wall time: on a loaded machine the wall time of any
    callback includes the turns other processes took; the CPU time is what the callback itself
    cost, which is what a change to it changes.
    """
    handle = asyncio.events.Handle
    original = handle._run
    worst: list[tuple[float, float, str]] = []
    kinds: dict[str, list[float]] = {}
    counts = [0, 0.0]  # callbacks, CPU seconds in all

    def timed(self: Any) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        original(self)
        took_cpu = time.thread_time() - cpu
        took = time.perf_counter() - started
        counts[0] += 1
        counts[1] += took_cpu
        if took_cpu >= _SLOW_S:
            name, kind = _describe(self._callback)
            kinds.setdefault(kind, []).append(took_cpu)
            entry = (took_cpu, took, name)
            if len(worst) < _KEEP:
                heapq.heappush(worst, entry)
            else:
                heapq.heappushpop(worst, entry)

    # Collections run inside whichever callback allocates: time them apart, by generation.
    collections: dict[int, list[float]] = {}
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.thread_time()
        else:
            took = time.thread_time() - gc_started[0]
            collections.setdefault(info.get("generation", -1), []).append(took)

    handle._run = timed  # type: ignore[method-assign]
    gc.callbacks.append(on_gc)
    try:
        yield
    finally:
        handle._run = original  # type: ignore[method-assign]
        gc.callbacks.remove(on_gc)
        longest = sorted(worst, reverse=True)
        lines = [
            f"{counts[0]} callbacks, {counts[1]:.3f} s CPU; "
            f"{sum(map(len, kinds.values()))} took {_SLOW_S * 1000:g} ms of CPU or more",
            "CPU ms of the longest: " + ", ".join(f"{c * 1000:.1f}" for c, _, _ in longest[:10]),
            "garbage collections (inside those callbacks), by generation: count, max CPU ms: "
            + ", ".join(
                f"gen{g} {len(t)} {max(t) * 1000:.1f}" for g, t in sorted(collections.items())
            ),
            "by kind: count, total CPU ms, max CPU ms",
        ]
        for kind, took in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
            lines.append(f"{len(took):6d} {sum(took) * 1000:9.1f} {max(took) * 1000:7.1f}  {kind}")
        lines.append("longest: CPU ms, wall ms, callback")
        lines += [f"{c * 1000:7.1f} {w * 1000:7.1f}  {name}" for c, w, name in longest]
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
