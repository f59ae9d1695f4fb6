"""SurvivorFreezer: survivors of a full collection are frozen; a sweep reclaims frozen cycles."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from marketpulse.reactive._gc import SurvivorFreezer


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # leave the test process as it found it


async def test_survivors_of_a_full_collection_are_frozen(unfrozen: None) -> None:
    freezer = SurvivorFreezer(asyncio.get_running_loop(), sweep_interval=3600)
    freezer.start()
    try:
        gc.unfreeze()
        keep = [_Node() for _ in range(1000)]
        assert gc.get_freeze_count() == 0
        gc.collect()  # a full collection: its survivors get frozen on the loop
        await asyncio.sleep(0)
        assert freezer.freezes == 1
        assert gc.get_freeze_count() >= len(keep)
        gc.collect(1)  # not a full collection: nothing more is frozen
        await asyncio.sleep(0)
        assert freezer.freezes == 1
    finally:
        freezer.stop()


async def test_a_sweep_reclaims_a_cycle_among_frozen_objects(unfrozen: None) -> None:
    freezer = SurvivorFreezer(asyncio.get_running_loop(), sweep_interval=0.05)
    freezer.start()
    try:
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        gc.collect()
        await asyncio.sleep(0)  # the cycle is alive, so it is frozen now
        del a, b
        gc.collect()
        assert gone() is not None, "a frozen cycle waits for the sweep"
        await asyncio.sleep(0.2)
        assert freezer.sweeps >= 1
        assert gone() is None
        assert gc.get_freeze_count() > 0  # frozen again after the sweep
    finally:
        freezer.stop()
