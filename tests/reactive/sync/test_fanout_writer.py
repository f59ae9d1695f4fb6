"""FanoutWriter over real sockets: what it writes on threads, what it hands back to the
transport (short writes, EAGAIN, a closed peer), per-socket order, and the inline path."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from marketpulse.reactive.sync._fanout_writer import FanoutWriter, fanout_writer_from_env


class Recording:
    """A transport that records what it is asked to write (the asyncio side of the contract)."""

    def __init__(self, buffered: int = 0, closing: bool = False) -> None:
        self.written: list[bytes] = []
        self.buffered = buffered
        self.closing = closing

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered


@contextlib.contextmanager
def tcp_pairs(n: int) -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """``n`` loopback TCP connections: (the server's non-blocking end, the client's end)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=n)
    pairs = []
    try:
        for _ in range(n):
            client = socket.create_connection(listener.getsockname())
            server, _ = listener.accept()
            server.setblocking(False)
            pairs.append((server, client))
        yield pairs
    finally:
        listener.close()
        for server, client in pairs:
            server.close()
            client.close()


def read_available(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    out = bytearray()
    with contextlib.suppress(BlockingIOError):
        while chunk := sock.recv(1 << 20):
            out += chunk
    return bytes(out)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(10)
    out = bytearray()
    while len(out) < size:
        chunk = sock.recv(size - len(out))
        assert chunk, "peer closed early"
        out += chunk
    return bytes(out)


def fill(sock: socket.socket) -> None:
    """Write into ``sock`` until its kernel buffers take no more (the peer reads nothing)."""
    with contextlib.suppress(BlockingIOError):
        while True:
            sock.send(b"f" * 65536)


def test_a_large_fanout_is_written_on_threads_each_socket_once_in_order() -> None:
    writer = FanoutWriter(threads=2, min_sockets=8)
    transport = Recording()
    with tcp_pairs(40) as pairs:
        assert writer.start(len(pairs))
        for i, (server, _) in enumerate(pairs):
            assert writer.take(server, server.fileno(), transport, b"first-%d;" % i)
        for i, (server, _) in enumerate(pairs):  # a second frame for the same socket
            assert writer.take(server, server.fileno(), transport, b"second-%d;" % i)
        assert writer.finish() is True
        assert not writer.collecting
        for i, (_, client) in enumerate(pairs):
            expected = b"first-%d;second-%d;" % (i, i)
            assert read_exactly(client, len(expected)) == expected
    assert transport.written == []  # everything went straight to the sockets
    assert any(t.name.startswith("marketpulse-fanout") for t in threading.enumerate())


def test_a_wide_fanout_is_written_chunk_by_chunk_as_frames_are_taken() -> None:
    writer = FanoutWriter(threads=1, min_sockets=4, chunk=8)
    transport = Recording()
    with tcp_pairs(20) as pairs:
        assert writer.start(len(pairs))
        for i, (server, _) in enumerate(pairs[:8]):
            assert writer.take(server, server.fileno(), transport, b"first-%d;" % i)
        # The eighth frame filled a chunk: those sockets have their bytes before finish().
        assert [read_exactly(client, 8) for _, client in pairs[:8]] == [
            b"first-%d;" % i for i in range(8)
        ]
        for i, (server, _) in enumerate(pairs[8:], start=8):
            assert writer.take(server, server.fileno(), transport, b"first-%d;" % i)
        # A later frame for a socket of a written chunk is taken again, after its bytes.
        server, client = pairs[0]
        assert writer.take(server, server.fileno(), transport, b"second-0;")
        assert writer.finish() is True
        for i, (_, client) in enumerate(pairs[8:], start=8):
            assert read_exactly(client, len(b"first-%d;" % i)) == b"first-%d;" % i
        assert read_exactly(pairs[0][1], 9) == b"second-0;"
    assert transport.written == []


def test_the_loop_thread_writes_a_chunk_alone_when_no_helper_is_free() -> None:
    """The helper's part is whatever it finds unwritten when it wakes: a helper that is still
    busy (here, held on purpose) neither blocks the fan-out nor writes a socket twice."""
    writer = FanoutWriter(threads=1, min_sockets=4, chunk=8)
    transport = Recording()
    held = threading.Event()
    gate = threading.Event()
    writer._pool = ThreadPoolExecutor(1)  # the writer's own pool, its one thread kept busy
    blocker = writer._pool.submit(lambda: (held.set(), gate.wait(10)))
    assert held.wait(10)
    try:
        with tcp_pairs(12) as pairs:
            assert writer.start(len(pairs))
            for i, (server, _) in enumerate(pairs):
                assert writer.take(server, server.fileno(), transport, b"frame-%02d;" % i)
            assert writer.finish() is True
            assert not blocker.done()  # finished without waiting for the helper
            for i, (_, client) in enumerate(pairs):
                assert read_exactly(client, 9) == b"frame-%02d;" % i
            gate.set()
            blocker.result(10)
            writer._pool.submit(lambda: None).result(10)  # the late helper jobs have run
            for _, client in pairs:
                assert read_available(client) == b""  # and wrote nothing more
    finally:
        gate.set()
        writer.close()
    assert transport.written == []
    assert writer.helper_cpu_s == 0.0


def test_below_the_threshold_everything_goes_through_the_transport() -> None:
    writer = FanoutWriter(threads=1, min_sockets=8)
    assert not writer.start(7)  # too few members: nothing is collected at all
    assert writer.start(8)
    transports = [Recording() for _ in range(3)]
    with tcp_pairs(3) as pairs:
        for i, ((server, _), transport) in enumerate(zip(pairs, transports, strict=True)):
            assert writer.take(server, server.fileno(), transport, b"a%d" % i)
            assert writer.take(server, server.fileno(), transport, b"b%d" % i)
        # 3 sockets took frames, fewer than a quarter of a chunk (128): written through their
        # transports, in order.
        assert writer.finish() is False
        assert [t.written for t in transports] == [[b"a0b0"], [b"a1b1"], [b"a2b2"]]
        assert all(read_available(client) == b"" for _, client in pairs)


def test_threads_off_collects_nothing() -> None:
    writer = FanoutWriter(threads=0, min_sockets=1)
    assert not writer.start(10_000)
    assert not writer.collecting


def test_a_socket_with_buffered_bytes_or_closing_is_not_taken() -> None:
    writer = FanoutWriter(threads=1, min_sockets=1)
    writer.start(10)
    with tcp_pairs(1) as [(server, _)]:
        fd = server.fileno()
        assert not writer.take("buffered", fd, Recording(buffered=1), b"x")
        assert not writer.take("closing", fd, Recording(closing=True), b"x")
        assert not writer.take("no fd", -1, Recording(), b"x")
    assert writer.finish() is False


def test_release_writes_a_sockets_frames_through_its_transport_before_anything_else() -> None:
    writer = FanoutWriter(threads=1, min_sockets=2, chunk=8)
    early, late = Recording(), Recording()
    with tcp_pairs(3) as pairs:
        (s0, c0), (s1, c1), (s2, c2) = pairs
        writer.start(3)
        assert writer.take(s0, s0.fileno(), early, b"t1")
        assert writer.take(s0, s0.fileno(), early, b"t2")
        writer.release(s0)  # e.g. a close frame is about to go to s0's transport
        assert early.written == [b"t1t2"]
        writer.release(s0)  # nothing more to release
        assert early.written == [b"t1t2"]
        assert writer.take(s1, s1.fileno(), late, b"u1")
        assert writer.take(s2, s2.fileno(), late, b"v1")
        assert writer.finish() is True
        assert read_exactly(c1, 2) == b"u1"
        assert read_exactly(c2, 2) == b"v1"
        assert read_available(c0) == b""  # s0's frames went to its transport only, once
    assert late.written == []


def test_eagain_hands_the_whole_frame_to_the_transport() -> None:
    writer = FanoutWriter(threads=1, min_sockets=2, chunk=8)
    full, free = Recording(), Recording()
    with tcp_pairs(2) as [(s_full, _), (s_free, c_free)]:
        fill(s_full)
        writer.start(2)
        assert writer.take(s_full, s_full.fileno(), full, b"held")
        assert writer.take(s_free, s_free.fileno(), free, b"sent")
        assert writer.finish() is True
        assert full.written == [b"held"]
        assert free.written == []
        assert read_exactly(c_free, 4) == b"sent"


def test_a_short_write_hands_the_unsent_rest_to_the_transport() -> None:
    writer = FanoutWriter(threads=1, min_sockets=2, chunk=8)
    transport = Recording()
    big = bytes(range(256)) * (64 * 1024)  # 16 MiB: more than the socket buffers take
    with tcp_pairs(2) as [(server, client), (other, other_client)]:
        writer.start(2)
        assert writer.take(server, server.fileno(), transport, big)
        assert writer.take(other, other.fileno(), Recording(), b"x")
        assert writer.finish() is True
        [rest] = transport.written
        assert 0 < len(rest) < len(big)
        # What reached the socket and what the transport got are the frame, split once.
        received = read_exactly(client, len(big) - len(rest))
        assert received + rest == big
        assert read_exactly(other_client, 1) == b"x"


def test_a_reset_peer_hands_the_frame_to_the_transport_which_meets_the_error() -> None:
    writer = FanoutWriter(threads=1, min_sockets=2, chunk=8)
    gone, alive = Recording(), Recording()
    with tcp_pairs(2) as [(s_gone, c_gone), (s_alive, c_alive)]:
        # The peer resets the connection (closed with unread data, SO_LINGER 0).
        c_gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c_gone.close()
        with contextlib.suppress(OSError):  # let the reset arrive
            s_gone.setblocking(True)
            s_gone.settimeout(2)
            s_gone.recv(1)
        s_gone.setblocking(False)
        writer.start(2)
        assert writer.take(s_gone, s_gone.fileno(), gone, b"lost")
        assert writer.take(s_alive, s_alive.fileno(), alive, b"kept")
        assert writer.finish() is True
        assert gone.written == [b"lost"]  # asyncio's transport then fails the connection
        assert read_exactly(c_alive, 4) == b"kept"


async def test_real_transports_keep_each_sockets_bytes_in_order_across_a_short_write() -> None:
    """With asyncio's own transports: the unsent rest is buffered by asyncio and a later write
    follows it, so the peer reads every frame whole and in order."""
    loop = asyncio.get_running_loop()
    writer = FanoutWriter(threads=1, min_sockets=2, chunk=8)
    big = bytes(range(256)) * (32 * 1024)  # 8 MiB
    with tcp_pairs(2) as pairs:
        transports = []
        for server, _ in pairs:
            transport, _ = await loop.create_connection(asyncio.Protocol, sock=server)
            transports.append(transport)
        (s0, c0), (s1, c1) = pairs
        writer.start(2)
        assert writer.take(s0, s0.fileno(), transports[0], b"head;")
        assert writer.take(s0, s0.fileno(), transports[0], big)
        assert writer.take(s1, s1.fileno(), transports[1], b"small;")
        assert writer.finish() is True
        assert transports[0].get_write_buffer_size() > 0  # the rest waits in asyncio
        transports[0].write(b";tail")  # the next fan-out's frame, written the usual way
        expected = b"head;" + big + b";tail"
        got = await asyncio.to_thread(read_exactly, c0, len(expected))
        assert got == expected
        assert read_exactly(c1, 6) == b"small;"
        for transport in transports:
            transport.close()


def test_configuration_from_the_environment() -> None:
    default = fanout_writer_from_env({})
    assert (default.threads, default.min_sockets, default.chunk) == (1, 512, 128)
    off = fanout_writer_from_env({"MARKETPULSE_FANOUT_THREADS": "0"})
    assert off.threads == 0
    tuned = fanout_writer_from_env(
        {"MARKETPULSE_FANOUT_THREADS": "2", "MARKETPULSE_FANOUT_MIN_SOCKETS": "100"}
    )
    assert (tuned.threads, tuned.min_sockets) == (2, 100)
    with pytest.raises(ValueError, match="MARKETPULSE_FANOUT_THREADS"):
        fanout_writer_from_env({"MARKETPULSE_FANOUT_THREADS": "many"})


def test_serve_refuses_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    """A bad ``MARKETPULSE_FANOUT_*`` value stops ``serve`` before it listens: exit 2 and the
    reason, no traceback."""
    env = {**os.environ, "MARKETPULSE_FANOUT_THREADS": "two"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "marketpulse",
            "serve",
            "--port",
            "0",
            "--db",
            f"sqlite:{tmp_path / 's.sqlite'}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "MARKETPULSE_FANOUT_THREADS must be a whole number >= 0, not 'two'" in done.stderr
    assert "Traceback" not in done.stderr
