"""One fan-out's socket writes, spread over the event loop's thread and helper threads.

Why threads: on the store's hosts a loopback TCP send costs ~15-20 us of CPU, almost all of it
in the kernel, and CPython releases the GIL around the ``write`` syscall. A commit pushed to
1,000 sockets spends a third of its fan-out in those syscalls. While the loop thread writes its
share of the sockets, a helper thread writes another share: their syscalls run at the same
time on two cores, and the Python between two writes (a slice, a loop step) is short enough
that the GIL passes back and forth at each syscall without waiting for a switch interval.

How: while :class:`~marketpulse.reactive.gateway.Flusher` flushes a fan-out of at least
``min_sockets`` members, ``SyncSocket.send_text`` hands its frame to :meth:`FanoutWriter.take`
instead of the transport, if the transport is open and its write buffer is empty. When every
member is flushed, :meth:`FanoutWriter.finish` writes what it took with ``os.write`` on the
socket's file descriptor, one share per thread, the loop thread included, and waits for the
helpers. What a write could not send (a short write, ``EAGAIN``, any ``OSError``) goes to
``transport.write`` on the loop thread afterwards: asyncio buffers it or handles the error
exactly as when the frame had gone to the transport directly.

Why the order of each socket's bytes is kept:

- a socket's frames are taken only while its transport's buffer is empty, so nothing written
  before them is still waiting in asyncio;
- once a socket has a frame here, its later frames of the same fan-out are appended to it, and
  anything else the socket does to its transport meanwhile (a close frame, a close, an abort)
  first calls :meth:`FanoutWriter.release`, which writes the taken frames through the transport
  before it;
- the threads write while the loop thread is inside ``finish``: no loop callback runs, so no
  other code touches those transports or file descriptors until every thread is done;
- each socket is written by exactly one thread, and its unsent rest goes to the transport
  before any later write can reach it.

Small fan-outs stay on the loop thread through the transport, as before: handing work to a
thread and waiting for it costs tens of microseconds, a few writes' worth.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import structlog

__all__ = ["DEFAULT_MIN_SOCKETS", "DEFAULT_THREADS", "FanoutWriter", "fanout_writer_from_env"]

log = structlog.get_logger("marketpulse.gateway")

DEFAULT_THREADS = 1
"""Helper threads (besides the loop's) by default; 0 writes every fan-out on the loop thread."""

DEFAULT_MIN_SOCKETS = 64
"""Fewest sockets of one fan-out that are written on threads (fewer go through the transport)."""


class _Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...


class _Taken:
    """One socket's frames of this fan-out."""

    __slots__ = ("fd", "frames", "transport")

    def __init__(self, fd: int, transport: _Transport, frame: bytes) -> None:
        self.fd = fd
        self.transport = transport
        self.frames = [frame]

    def data(self) -> bytes:
        frames = self.frames
        return frames[0] if len(frames) == 1 else b"".join(frames)


def _hand_back(transport: _Transport, data: bytes) -> None:
    """Write through the transport, as ``send_text`` would have; one failure stops no other."""
    try:
        transport.write(data)
    except Exception:
        log.exception("direct transition write failed")


def _write_all(taken: list[_Taken]) -> list[tuple[_Transport, bytes]]:
    """Write each socket's frames with one ``os.write``; what was not sent, per transport.

    Runs on any thread: it touches only file descriptors (the GIL is released in each write)
    and the taken frames, never a transport.
    """
    unsent: list[tuple[_Transport, bytes]] = []
    write = os.write
    for entry in taken:
        data = entry.data()
        try:
            sent = write(entry.fd, data)
        except OSError:
            # EAGAIN, a reset, a closed peer: the transport retries and buffers it, or meets
            # the error itself and closes as it always does.
            sent = 0
        if sent < len(data):
            unsent.append((entry.transport, data[sent:]))
    return unsent


class FanoutWriter:
    """Takes the frames of one large fan-out and writes them on several threads.

    Drive it from the event loop's thread only: :meth:`start` before the fan-out, :meth:`take`
    for each frame (False: write it to the transport yourself, now), :meth:`release` before
    anything else is done to a socket's transport during the fan-out, :meth:`finish` after it.

    Args:
        threads: helper threads besides the loop's (0: never collect, every write goes to the
            transport at once).
        min_sockets: fewest members of a fan-out for which frames are collected, and fewest
            collected sockets that are written on threads (fewer go through their transport).
    """

    def __init__(self, threads: int = DEFAULT_THREADS, min_sockets: int = DEFAULT_MIN_SOCKETS):
        self.threads = max(0, threads)
        self.min_sockets = max(1, min_sockets)
        # Whether take() collects now (an attribute, read on every send: no call when off).
        self.collecting = False
        self._taken: dict[Hashable, _Taken] = {}
        # Created on the first threaded fan-out and kept for the process's life.
        self._pool: ThreadPoolExecutor | None = None

    def start(self, members: int) -> bool:
        """A fan-out to ``members`` sockets begins; whether frames are collected for it."""
        self.collecting = self.threads > 0 and members >= self.min_sockets
        return self.collecting

    def take(self, key: Hashable, fd: int, transport: _Transport, frame: bytes) -> bool:
        """Keep ``frame`` for ``key``'s socket (file descriptor ``fd``) if it can wait for
        :meth:`finish`; False: the caller writes it to ``transport`` now."""
        entry = self._taken.get(key)
        if entry is not None:
            entry.frames.append(frame)  # after its earlier frames, never around them
            return True
        if fd < 0 or transport.is_closing() or transport.get_write_buffer_size():
            return False
        self._taken[key] = _Taken(fd, transport, frame)
        return True

    def release(self, key: Hashable) -> None:
        """``key``'s socket is about to act on its transport: write what it has here first."""
        if self._taken:
            entry = self._taken.pop(key, None)
            if entry is not None:
                _hand_back(entry.transport, entry.data())

    def finish(self) -> bool:
        """The fan-out's members are all flushed: write every frame taken, then stop taking.

        Returns:
            Whether the writes were spread over threads.
        """
        self.collecting = False
        if not self._taken:
            return False
        taken = list(self._taken.values())
        self._taken.clear()
        if len(taken) < self.min_sockets:
            for entry in taken:
                _hand_back(entry.transport, entry.data())
            return False
        pool = self._pool
        if pool is None:
            pool = self._pool = ThreadPoolExecutor(
                self.threads, thread_name_prefix="marketpulse-fanout"
            )
        shares = self.threads + 1
        size = -(-len(taken) // shares)
        # The helpers' shares first: they start while the loop thread writes the last one.
        futures: list[Future[list[tuple[_Transport, bytes]]]] = [
            pool.submit(_write_all, taken[i * size : (i + 1) * size]) for i in range(shares - 1)
        ]
        unsent = _write_all(taken[(shares - 1) * size :])
        for future in futures:
            unsent.extend(future.result())
        for transport, rest in unsent:
            _hand_back(transport, rest)
        return True

    def close(self) -> None:
        """Stop the helper threads (a server shutting down; the writer stays usable)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


def fanout_writer_from_env(env: Any = None) -> FanoutWriter:
    """A writer configured by ``MARKETPULSE_FANOUT_THREADS`` (helper threads, 0: off) and
    ``MARKETPULSE_FANOUT_MIN_SOCKETS``, or the defaults.

    Raises:
        ValueError: a variable is set to something other than a whole number >= 0.
    """
    env = os.environ if env is None else env
    values = []
    for name, default in (
        ("MARKETPULSE_FANOUT_THREADS", DEFAULT_THREADS),
        ("MARKETPULSE_FANOUT_MIN_SOCKETS", DEFAULT_MIN_SOCKETS),
    ):
        raw = env.get(name, "").strip()
        try:
            value = int(raw) if raw else default
        except ValueError:
            value = -1
        if value < 0:
            raise ValueError(f"{name} must be a whole number >= 0, not {raw!r}")
        values.append(value)
    return FanoutWriter(values[0], values[1])
