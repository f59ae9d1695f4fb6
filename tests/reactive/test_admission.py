"""Admission's listening socket: a small accept batch per loop turn, a long kernel queue; a
burst of timeouts runs a budget per loop turn."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

import pytest

from marketpulse.reactive.admission import ACCEPT_BATCH, TurnBudget, widen_listen_queue
from spinning import spin


def listen_queue(port: int) -> int:
    """The kernel's accept-queue length of a listening port (``ss``'s Send-Q)."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[2])


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
async def test_the_kernel_queue_is_widened_after_a_small_accept_batch() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, backlog=ACCEPT_BATCH)
    try:
        port = server.sockets[0].getsockname()[1]
        assert listen_queue(port) == ACCEPT_BATCH
        widen_listen_queue([server], 1024)
        assert listen_queue(port) == 1024
        # Still serving: the same socket, listening.
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_burst_of_timeouts_is_spread_over_loop_turns() -> None:
    """1,000 timers due at once, each taking 0.1 ms: run under a 2 ms budget per turn, the
    loop gets back to its sockets between slices, and every one still runs."""
    loop = asyncio.get_running_loop()
    budget = TurnBudget(0.002)
    done = 0
    turns: list[float] = []  # when each slice began (a sentinel per turn)

    def expire() -> None:
        nonlocal done
        if budget.spent():
            loop.call_soon(expire)
            return
        spin(0.0001)
        done += 1

    per_turn: list[int] = []  # timers run between two turns of the watcher

    async def watch() -> None:
        seen = 0
        while done < 1000:
            await asyncio.sleep(0)
            turns.append(time.perf_counter())
            per_turn.append(done - seen)
            seen = done

    at = loop.time() + 0.05
    for _ in range(1000):
        loop.call_at(at, expire)
    await asyncio.wait_for(watch(), 30)
    assert done == 1000
    assert budget.deferred > 0
    assert len(turns) >= 20, "the burst ran over many turns, not one"
    # A 2 ms budget holds ~20 timers of 0.1 ms; a loaded machine only fits fewer (the budget is
    # wall time), never more: counting them, not timing the turn, keeps this check exact.
    assert max(per_turn) <= 25, max(per_turn)


def test_the_unsent_budget_drops_the_largest_holders_until_within_it() -> None:
    from marketpulse.reactive.admission import UnsentBudget

    class Held:
        def __init__(self, size: int) -> None:
            self.size = size

        def get_write_buffer_size(self) -> int:
            return self.size

        def get_extra_info(self, name: str) -> None:
            return None  # no socket: the transport's buffer alone

    budget = UnsentBudget(10)
    dropped: list[int] = []
    a, b, c, d = Held(4), Held(5), Held(6), Held(1)
    for held in (a, b):
        budget.paused(held, lambda held=held: dropped.append(held.size))  # type: ignore[arg-type]
    assert dropped == []  # 9 of 10
    budget.paused(c, lambda: dropped.append(c.size))  # type: ignore[arg-type]
    assert dropped == [6]  # 15: the largest goes, and 9 is within
    b.size = 9
    budget.paused(d, lambda: dropped.append(d.size))  # type: ignore[arg-type]
    assert dropped == [6, 9]  # 4 + 9 + 1: the largest again
    budget.resumed(a)  # drained: no longer counted
    budget.paused(Held(9), lambda: dropped.append(-1))  # type: ignore[arg-type]
    assert dropped == [6, 9]  # 1 + 9
    off = UnsentBudget(0)  # 0: no budget
    off.paused(Held(10**9), lambda: dropped.append(0))  # type: ignore[arg-type]
    assert dropped == [6, 9]


async def test_a_graceful_close_of_a_connection_the_peer_reset_does_not_raise() -> None:
    """A refusal (a 413 with ``Connection: close``) to a client that has already reset the
    connection: shutting down writing fails with ENOTCONN, which used to escape into the
    request cycle (uvicorn's "Exception in ASGI application" traceback, at the client's will).
    The connection is closed at once instead."""
    import socket
    import struct

    from marketpulse.reactive.admission import close_gracefully

    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.Transport] = loop.create_future()
    lost: asyncio.Future[None] = loop.create_future()

    class Inner(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            transport.pause_reading()  # as a request cycle busy with its answer
            accepted.set_result(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            lost.set_result(None)

    server = await loop.create_server(Inner, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        transport = await asyncio.wait_for(accepted, 5)
        client.sendall(b"x" * 1000)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset, the server's socket not yet told
        await asyncio.sleep(0.1)
        assert not transport.is_closing()
        close_gracefully(transport)
        await asyncio.wait_for(lost, 1)  # closed now, not after the 2 s linger
    finally:
        server.close()
        await server.wait_closed()
