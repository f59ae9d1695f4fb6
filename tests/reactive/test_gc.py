"""GcPacer: CPython never starts a full pass; the pacer runs one on the loop every few
generation 1 passes and freezes its survivors; a sweep reclaims frozen cycles."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from marketpulse.reactive._gc import GcPacer


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def clean_gc() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()  # leave the test process as it found it
    gc.set_threshold(*saved)


async def test_start_freezes_the_heap_and_takes_over_full_passes(clean_gc: None) -> None:
    before = gc.get_threshold()
    pacer = GcPacer(asyncio.get_running_loop(), young=(500, 2), full_after=3)
    pacer.start()
    try:
        assert gc.get_freeze_count() > 0
        young0, young1, full = gc.get_threshold()
        assert (young0, young1) == (500, 2)
        assert full >= 1_000_000, "CPython must never start a full pass on its own"
    finally:
        pacer.stop()
    assert gc.get_threshold() == before


async def test_a_full_pass_runs_on_the_loop_after_some_generation_1_passes(
    clean_gc: None,
) -> None:
    pacer = GcPacer(asyncio.get_running_loop(), young=(100_000, 100), full_after=3)
    pacer.start()  # young thresholds out of reach: only this test's passes count
    try:
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        gc.collect(1)  # alive: promoted to generation 2, where only a full pass looks
        del a, b
        gc.collect(1)
        await asyncio.sleep(0)
        assert gone() is not None, "a generation 1 pass does not see generation 2"
        assert pacer.full_passes == 0
        frozen = gc.get_freeze_count()
        keep = [_Node() for _ in range(1000)]
        gc.collect(1)  # the third: a full pass is due
        assert pacer.full_passes == 0, "scheduled on the loop, never inside the collector"
        await asyncio.sleep(0)
        assert pacer.full_passes == 1
        assert gone() is None, "the full pass reclaimed the promoted cycle"
        assert gc.get_freeze_count() >= frozen + len(keep), "its survivors are frozen"
    finally:
        pacer.stop()


async def test_a_sweep_reclaims_a_cycle_among_frozen_objects(clean_gc: None) -> None:
    pacer = GcPacer(asyncio.get_running_loop(), sweep_interval=0.05)
    pacer.start()
    try:
        a = _Node()
        a.other = a
        gone = weakref.ref(a)
        gc.freeze()  # as a full pass leaves it: the live cycle is frozen
        del a
        gc.collect()
        assert gone() is not None, "a frozen cycle waits for the sweep"
        await asyncio.sleep(0.2)
        assert pacer.sweeps >= 1
        assert pacer.last_sweep_s > 0
        assert gone() is None
        assert gc.get_freeze_count() > 0  # frozen again after the sweep
    finally:
        pacer.stop()
