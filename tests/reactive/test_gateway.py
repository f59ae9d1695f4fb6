"""The gateway's passes over sockets, each in slices of the loop: the connection watchdog's
and the fan-out's (:class:`Flusher`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from marketpulse.reactive.gateway import ConnectionWatchdog, Flusher
from marketpulse.reactive.sync._fanout_writer import FanoutWriter
from spinning import spin


class Socket:
    """A connection whose tick costs ``cost_s`` of CPU (a timeout's FatalError and close)."""

    def __init__(self, watchdog: ConnectionWatchdog, cost_s: float) -> None:
        self.watchdog = watchdog
        self.cost_s = cost_s
        self.ticks = 0

    def tick(self, now: float) -> None:
        spin(self.cost_s)
        self.ticks += 1
        self.watchdog.discard(self)  # timed out: closed, gone from the watchdog


async def test_a_pass_over_many_sockets_yields_the_loop() -> None:
    watchdog = ConnectionWatchdog(0.05, slice_s=0.005)
    sockets = [Socket(watchdog, 0.0005) for _ in range(1000)]  # 0.5 s of ticks in all
    for sock in sockets:
        watchdog.add(sock)
    while all(s.ticks == 0 for s in sockets):
        await asyncio.sleep(0)
    worst = 0.0
    last = time.perf_counter()
    deadline = last + 60
    while any(s.ticks == 0 for s in sockets) and time.perf_counter() < deadline:
        await asyncio.sleep(0)
        now = time.perf_counter()
        worst = max(worst, now - last)
        last = now
    assert all(s.ticks == 1 for s in sockets)
    # In one callback the pass held the loop 0.5 s; in 5 ms slices the loop runs in between
    # (generous for a loaded machine).
    assert worst < 0.25, worst


async def test_sockets_gone_while_a_pass_yields_are_not_ticked() -> None:
    watchdog = ConnectionWatchdog(0.01, slice_s=0.0)  # yields after every socket
    sockets = [Socket(watchdog, 0.0) for _ in range(3)]
    for sock in sockets:
        watchdog.add(sock)
    while all(s.ticks == 0 for s in sockets):
        await asyncio.sleep(0)
    # The pass yielded after its first socket: drop one it has not reached.
    waiting = [s for s in sockets if s.ticks == 0]
    assert len(waiting) == 2
    watchdog.discard(waiting[0])
    await asyncio.sleep(0.05)
    assert waiting[0].ticks == 0 and waiting[1].ticks == 1


class Member:
    """A socket whose Transition write costs ``cost_s`` (wall clock) and is logged."""

    def __init__(self, name: int, log: list[int], cost_s: float) -> None:
        self.name, self.log, self.cost_s = name, log, cost_s

    def flush_now(self, now: float, shared: dict[Any, bytes] | None = None) -> None:
        spin(self.cost_s)
        self.log.append(self.name)


async def test_a_wide_fan_out_is_written_over_several_turns_in_order() -> None:
    flusher = Flusher(slice_s=0.003)
    written: list[int] = []
    members = [Member(i, written, 0.001) for i in range(10)]
    for m in members:
        flusher.add(m)
    await asyncio.sleep(0)  # one turn: the first slice
    first = len(written)
    assert 1 <= first < 10, first
    # Dirtied again meanwhile (a later commit): written after the ones still waiting.
    flusher.add(members[0])
    for _ in range(100):
        if len(written) == 11:
            break
        await asyncio.sleep(0)
    assert written == [*range(10), 0]


async def test_a_timer_due_during_a_slice_runs_before_the_next_slice() -> None:
    flusher = Flusher(slice_s=0.0)  # one member per slice
    log: list[object] = []
    members = [Member(i, log, 0.002) for i in range(3)]
    loop = asyncio.get_running_loop()
    loop.call_at(loop.time() + 0.001, log.append, "timer")  # comes due during the first slice
    for m in members:
        flusher.add(m)
    for _ in range(100):
        if len(log) == 4:
            break
        await asyncio.sleep(0.001)
    # It waited one slice, not two (a continuation by call_soon would run ahead of it).
    assert log == [0, "timer", 1, 2]


async def test_members_dirtied_twice_before_their_turn_are_written_once() -> None:
    flusher = Flusher(slice_s=0.0)  # one member per turn
    written: list[int] = []
    members = [Member(i, written, 0.0) for i in range(3)]
    for m in members:
        flusher.add(m)
    await asyncio.sleep(0)
    assert written == [0]
    flusher.add(members[2])  # still waiting: it keeps its place and is written once
    for _ in range(10):
        await asyncio.sleep(0)
    assert written == [0, 1, 2]


async def test_every_slice_of_a_wide_fan_out_is_judged_by_its_whole_width() -> None:
    """The writer's threads are for wide fan-outs: the last slices of one, whatever is left of
    it, still count as wide; the next fan-out is judged afresh."""
    widths: list[int] = []

    class Writer(FanoutWriter):
        def start(self, members: int) -> bool:
            widths.append(members)
            return super().start(members)

    flusher = Flusher(writer=Writer(threads=0), slice_s=0.0)  # one member per slice
    written: list[int] = []
    for i in range(3):
        flusher.add(Member(i, written, 0.0))
    for _ in range(10):
        await asyncio.sleep(0)
    assert written == [0, 1, 2]
    flusher.add(Member(9, written, 0.0))
    for _ in range(3):
        await asyncio.sleep(0)
    assert widths == [3, 3, 3, 1]
