"""One fan-out's socket writes, spread over the event loop's thread and helper threads.

Why threads: on the benchmark host a loopback TCP send costs ~8 us of CPU, almost all of it in
the kernel, and CPython releases the GIL around the ``write`` syscall. A commit pushed to 1,000
sockets spends about two thirds of its fan-out in those syscalls (py-spy, HISTORY.md session
24). While the loop thread writes its share of the sockets, a helper thread writes another
share: their syscalls run at the same time on two cores, and the Python between two writes (a
slice, a loop step) is short enough that the GIL passes back and forth at each syscall without
waiting for a switch interval.

How: while :class:`~marketpulse.reactive.gateway.Flusher` flushes a fan-out of at least
``min_sockets`` members, ``SyncSocket.send_text`` hands its frame to :meth:`FanoutWriter.take`
instead of the transport, if the transport is open and its write buffer is empty. Every
``chunk`` sockets taken, and once more when every member is flushed
(:meth:`FanoutWriter.finish`), what was taken is written with ``os.write`` on each socket's file
descriptor by the loop thread and the helpers together: each takes the next unwritten socket
from one shared counter, so none waits for another's share. A helper woken late (the wake-up
alone takes tens of microseconds here) writes fewer sockets; one that wakes after the chunk is
written writes none, and the loop thread waits only for a write a helper has begun. (With a
fixed half each, the loop thread spent about a tenth of a 1,000-socket fan-out waiting for
the helper's half: HISTORY.md, session 27.) In chunks, because the writes wait for the encodings:
written all at the end, a 1,000-socket fan-out's first socket waited for the last one's
Transition (its p50 rose by a quarter). What a write could not send (a short write,
``EAGAIN``, any ``OSError``) goes to ``transport.write`` on the loop thread afterwards: asyncio
buffers it or handles the error exactly as when the frame had gone to the transport directly.

Why the order of each socket's bytes is kept:

- a socket's frames are taken only while its transport's buffer is empty, so nothing written
  before them is still waiting in asyncio;
- once a socket has a frame here, its later frames of the same fan-out are appended to it
  until its chunk is written (after that, a new frame is taken again only if the transport's
  buffer is empty, i.e. behind every byte of the chunk), and anything else the socket does to
  its transport meanwhile (a close frame, a close, an abort) first calls
  :meth:`FanoutWriter.release`, which writes the taken frames through the transport before it;
- the threads write while the loop thread is inside ``take`` or ``finish``: no loop callback
  runs, so no other code touches those transports or file descriptors until every thread is
  done;
- each socket is written by exactly one thread, and its unsent rest goes to the transport
  before any later write can reach it.

Small fan-outs stay on the loop thread through the transport (``min_sockets``), and so does a
fan-out's last few sockets: handing work to a thread and waiting for it costs tens of
microseconds, a few writes' worth.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import structlog

__all__ = ["DEFAULT_MIN_SOCKETS", "DEFAULT_THREADS", "FanoutWriter", "fanout_writer_from_env"]

log = structlog.get_logger("marketpulse.gateway")

DEFAULT_THREADS = 1
"""Helper threads (besides the loop's) by default. On the 2-core benchmark host one helper cut a
1,000-socket fan-out's p99 by a sixth to a third (five alternated pairs, HISTORY.md session 24)."""

DEFAULT_MIN_SOCKETS = 512
"""Fewest members of a fan-out whose frames are collected for the threads (fewer go through
their transports). A fan-out that wide is a burst: the host's other core is idle for the helper
while the loop thread writes. The 10,000 msg/s stream's fan-outs (~270 members, 150 a second)
keep both cores busy, and a helper there only added hand-offs (p50 median 27.6 against 19.6 ms
over five alternated runs each, HISTORY.md session 24)."""

DEFAULT_CHUNK = 128
"""Frames taken before they are written: a wide fan-out's first sockets do not wait for the
encoding of its last (sync_latency at 1,000 subscribers, HISTORY.md session 24)."""


class _Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...


def _hand_back(transport: _Transport, data: bytes) -> None:
    """Write through the transport, as ``send_text`` would have; one failure stops no other."""
    try:
        transport.write(data)
    except Exception:
        log.exception("direct transition write failed")


class _Chunk:
    """One chunk's writes, shared by the loop thread and the helpers.

    Each writer takes the next index from ``claim`` (``next`` on an ``itertools.count`` runs
    without releasing the GIL, so no index is taken twice). ``active`` counts the helpers inside
    :func:`_help`; once the loop thread has run out of indices it sets ``closed``, and a helper
    arriving after that writes nothing.
    """

    __slots__ = (
        "active",
        "claim",
        "closed",
        "fds",
        "frames",
        "helper_cpu",
        "idle",
        "lock",
        "short",
    )

    def __init__(self, fds: list[int], frames: list[bytes]) -> None:
        self.fds = fds
        self.frames = frames
        self.claim = itertools.count().__next__
        self.lock = threading.Lock()
        self.idle = threading.Event()  # set when the last active helper leaves a closed chunk
        self.active = 0
        self.closed = False
        self.short: list[tuple[int, int]] = []  # (index, bytes sent) of frames not sent whole
        self.helper_cpu = 0.0


def _write_claimed(chunk: _Chunk, short: list[tuple[int, int]]) -> None:
    """Write the frames of the indices this thread claims, one ``os.write`` each, until none is
    left; note in ``short`` each frame not sent whole.

    Runs on any thread: it touches only file descriptors (the GIL is released in each write)
    and bytes, never a transport.
    """
    fds, frames, claim = chunk.fds, chunk.frames, chunk.claim
    count = len(fds)
    write = os.write
    while (i := claim()) < count:
        fd = fds[i]
        if fd < 0:
            continue  # a released socket's place: its frames went to its transport
        data = frames[i]
        try:
            sent = write(fd, data)
        except OSError:
            # EAGAIN, a reset, a closed peer: the transport retries and buffers it, or meets
            # the error itself and closes as it always does.
            sent = 0
        if sent < len(data):
            short.append((i, sent))


def _help(chunk: _Chunk) -> None:
    """A helper thread's part of a chunk: whatever is still unclaimed when it wakes."""
    with chunk.lock:
        if chunk.closed:
            return  # woken after the loop thread wrote the whole chunk
        chunk.active += 1
    began = time.thread_time()
    short: list[tuple[int, int]] = []
    try:
        _write_claimed(chunk, short)
    finally:
        with chunk.lock:
            chunk.short += short
            chunk.helper_cpu += time.thread_time() - began
            chunk.active -= 1
            if chunk.closed and not chunk.active:
                chunk.idle.set()


class FanoutWriter:
    """Takes the frames of one large fan-out and writes them on several threads.

    Drive it from the event loop's thread only: :meth:`start` before the fan-out, :meth:`take`
    for each frame (False: write it to the transport yourself, now), :meth:`release` before
    anything else is done to a socket's transport during the fan-out, :meth:`finish` after it.

    Args:
        threads: helper threads besides the loop's (0: never collect, every write goes to the
            transport at once).
        min_sockets: fewest members of a fan-out for which frames are collected.
        chunk: sockets taken before they are written; a rest of fewer than a quarter of a
            chunk is written on the loop thread through the transports.
    """

    def __init__(
        self,
        threads: int = DEFAULT_THREADS,
        min_sockets: int = DEFAULT_MIN_SOCKETS,
        chunk: int = DEFAULT_CHUNK,
    ):
        self.threads = max(0, threads)
        self.min_sockets = max(1, min_sockets)
        self.chunk = max(1, chunk)
        # A chunk (or the rest at finish) smaller than this goes through the transports.
        self._min_threaded = -(-self.chunk // 4)
        self._threaded = False  # whether this fan-out wrote a chunk on threads
        # Whether take() collects now (an attribute, read on every send: no call when off).
        self.collecting = False
        # What was taken, in parallel lists (no object per socket: a fan-out to 1,000 sockets
        # allocating 2,000 tracked objects tripled the store's full garbage collections).
        # A released socket keeps its place with fd -1 and an empty frame.
        self._index: dict[Hashable, int] = {}
        self._fds: list[int] = []
        self._transports: list[_Transport] = []
        self._frames: list[bytes] = []
        # Created on the first threaded fan-out and kept for the process's life.
        self._pool: ThreadPoolExecutor | None = None
        # CPU seconds the helper threads spent writing, summed (the fan-out's CPU metric adds
        # it to the loop thread's, which is all ``time.thread_time`` there sees).
        self.helper_cpu_s = 0.0

    def start(self, members: int) -> bool:
        """A fan-out to ``members`` sockets begins; whether frames are collected for it."""
        self.collecting = self.threads > 0 and members >= self.min_sockets
        return self.collecting

    def take(self, key: Hashable, fd: int, transport: _Transport, frame: bytes) -> bool:
        """Keep ``frame`` for ``key``'s socket (file descriptor ``fd``) if it can wait for
        :meth:`finish`; False: the caller writes it to ``transport`` now."""
        i = self._index.get(key)
        if i is not None:
            self._frames[i] += frame  # after its earlier frames, never around them
            return True
        if fd < 0 or transport.is_closing() or transport.get_write_buffer_size():
            return False
        self._index[key] = len(self._fds)
        self._fds.append(fd)
        self._transports.append(transport)
        self._frames.append(frame)
        if len(self._fds) >= self.chunk:
            self._write_taken()
        return True

    def release(self, key: Hashable) -> None:
        """``key``'s socket is about to act on its transport: write what it has here first."""
        if self._index:
            i = self._index.pop(key, None)
            if i is not None:
                data, self._frames[i], self._fds[i] = self._frames[i], b"", -1
                _hand_back(self._transports[i], data)

    def finish(self) -> bool:
        """The fan-out's members are all flushed: write every frame still taken, stop taking.

        Returns:
            Whether any of this fan-out's writes were spread over threads.
        """
        self.collecting = False
        self._write_taken()
        threaded, self._threaded = self._threaded, False
        return threaded

    def _write_taken(self) -> None:
        """Write the frames taken so far (one chunk of the fan-out) and start a new chunk.

        The chunk's sockets leave the index: a later frame of theirs in the same fan-out is
        taken again only if the transport's buffer is empty, i.e. after this chunk's bytes.
        """
        if not self._index:
            self._fds, self._transports, self._frames = [], [], []
            return
        fds, transports, frames = self._fds, self._transports, self._frames
        count = len(self._index)
        self._index = {}
        self._fds, self._transports, self._frames = [], [], []
        if count < self._min_threaded:
            for i, fd in enumerate(fds):
                if fd >= 0:
                    _hand_back(transports[i], frames[i])
            return
        pool = self._pool
        if pool is None:
            pool = self._pool = ThreadPoolExecutor(
                self.threads, thread_name_prefix="marketpulse-fanout"
            )
        chunk = _Chunk(fds, frames)
        for _ in range(self.threads):
            pool.submit(_help, chunk)
        short: list[tuple[int, int]] = []
        _write_claimed(chunk, short)  # the loop thread's CPU: its caller's
        with chunk.lock:
            chunk.closed = True
            busy = chunk.active > 0
        if busy:
            chunk.idle.wait()  # a helper is finishing the write it claimed
        self.helper_cpu_s += chunk.helper_cpu
        for i, sent in short + chunk.short:
            _hand_back(transports[i], frames[i][sent:])
        self._threaded = True

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
