"""Admission's listening socket: a small accept batch per loop turn, a long kernel queue."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest

from marketpulse.reactive.admission import ACCEPT_BATCH, widen_listen_queue


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
