"""The first door: which TCP connections the store takes, how long a request head may take, and
logs that stay readable while someone hammers the doors.

uvicorn's own ``limit_concurrency`` is not used: it answers 503 only after parsing a whole
request head (an idle connection that sends nothing is never refused), counts every connection
alike (no per-address cap), and logs a warning per refusal. uvicorn has no timeout for an
incomplete request head either (``timeout_keep_alive`` runs only between requests), and
httptools bounds no header size. :class:`GuardedHttp` adds the three to uvicorn's httptools
protocol, counting raw bytes as they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import resource
import socket
import struct
import termios
import time
from collections.abc import Callable, Iterable
from typing import Any

import httptools
import orjson
import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from marketpulse.reactive._throttle import LogThrottle
from marketpulse.reactive.limits import ConnectionLimits

__all__ = [
    "Admission",
    "GuardedHttp",
    "LogThrottle",
    "Ticket",
    "close_gracefully",
    "quiet_accept_errors",
    "raise_fd_limit",
    "return_memory",
]

log = structlog.get_logger("marketpulse.admission")

# How long, and how many bytes, a closing connection's late input is read and dropped.
LINGER_S = 2.0
LINGER_BYTES = 32 * 1024 * 1024  # above one whole message (16 MiB frames) still on its way

# Descriptors kept for everything but client sockets: the database, log files, listening
# sockets, a few child pipes. Without them a full server would fail accept() (EMFILE).
FD_RESERVE = 64


THROTTLE = LogThrottle()
"""The process's throttle for per-event logs (one hostile client must not fill the disk)."""


class Ticket:
    """One admitted connection's place; :meth:`release` gives it back (idempotent)."""

    __slots__ = ("_address", "_admission")

    def __init__(self, admission: Admission, address: str) -> None:
        self._admission: Admission | None = admission
        self._address = address

    def release(self) -> None:
        """Give the place back (the connection is gone)."""
        admission, self._admission = self._admission, None
        if admission is not None:
            admission.release(self._address)


class UnsentBudget:
    """Bytes written to clients and not taken by them yet, server-wide (``max_unsent_bytes``).

    Counted over the connections whose transport has paused writing: only they hold more than
    a high-water mark, and the check runs as each one pauses, i.e. in the very write that
    filled its buffer (a whole HTTP response, a large Transition). A connection's bytes are
    its transport's buffer and the kernel's send queue (up to megabytes a socket). Past the limit, the
    connections holding the most are dropped, largest first, until within it: without this,
    many clients asking for large answers and reading none could hold gigabytes for up to
    ``client_send_timeout_s``.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._paused: dict[asyncio.Transport, Callable[[], None]] = {}

    def paused(self, transport: asyncio.Transport, drop: Callable[[], None]) -> None:
        """``transport``'s buffer is over its high-water mark; ``drop`` aborts its connection
        (and is called at most once, when the server holds too much)."""
        if self.limit <= 0:
            return
        self._paused[transport] = drop
        sizes = {t: _unsent(t) for t in self._paused}
        held = sum(sizes.values())
        while held > self.limit and sizes:
            largest = max(sizes, key=sizes.__getitem__)
            held -= sizes.pop(largest)
            self._paused.pop(largest)()

    def resumed(self, transport: asyncio.Transport) -> None:
        """``transport`` drained below its low-water mark, or its connection is gone."""
        self._paused.pop(transport, None)


class Admission:
    """Counts open connections, in total and per client address, and the bytes waiting for
    slow readers (:attr:`unsent`).

    Args:
        limits: ``max_connections`` and ``max_connections_per_client`` (0: no limit).
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        self.max_total = limits.max_connections
        self.max_per_client = limits.max_connections_per_client
        self.total = 0
        self._per_client: dict[str, int] = {}
        self.refused = 0
        self.on_refused: Callable[[str], None] | None = None
        self.on_dropped: Callable[[], None] | None = None
        self.unsent = UnsentBudget(limits.max_unsent_bytes)

    def cap_total(self, fd_limit: int) -> int:
        """Keep the total cap below what ``fd_limit`` descriptors allow; returns the cap."""
        room = max(fd_limit - FD_RESERVE, 1)
        if self.max_total <= 0 or self.max_total > room:
            self.max_total = room
        return self.max_total

    def admit(self, address: str) -> Ticket | str:
        """A ticket for a new connection from ``address``, or why it is refused."""
        if self.max_total > 0 and self.total >= self.max_total:
            return self._refuse("TooManyConnections: the server is at its connection limit")
        mine = self._per_client.get(address, 0)
        if self.max_per_client > 0 and mine >= self.max_per_client:
            return self._refuse("TooManyConnections: too many connections from your address")
        self.total += 1
        self._per_client[address] = mine + 1
        return Ticket(self, address)

    def release(self, address: str) -> None:
        """A connection from ``address`` closed."""
        self.total -= 1
        left = self._per_client.get(address, 1) - 1
        if left > 0:
            self._per_client[address] = left
        else:
            self._per_client.pop(address, None)

    def dropped(self, reason: str = "not reading its response") -> None:
        """An HTTP client was dropped: it took none of its response for
        ``client_send_timeout_s``, or the server held too many unsent bytes."""
        if self.on_dropped is not None:
            self.on_dropped()
        THROTTLE.log(log, "warning", "http client dropped", reason=reason)

    def _refuse(self, reason: str) -> str:
        self.refused += 1
        if self.on_refused is not None:
            self.on_refused(reason)
        THROTTLE.log(log, "warning", "connection refused", reason=reason)
        return reason


def _simple_response(status: int, phrase: str, code: str, message: str) -> bytes:
    body = orjson.dumps({"code": code, "message": message})
    return (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode("latin-1") + body


class TurnBudget:
    """At most ``slice_s`` of some deferrable work per event-loop turn.

    Timeouts of connections opened in a burst come due in a burst, and asyncio runs every
    timer due in one turn before it polls the sockets again: 5,000 half-open connections'
    head timeouts and lingering closes held everyone's pushes for 100-400 ms turns
    (``bench/hostile.py`` ``half_open``), although none took over 1 ms. Work that asks
    :meth:`spent` first, and is put off to the next turn (``call_soon``) when it is, leaves
    the sockets polled between slices; a timeout that fires a few turns late harms no one.

    Args:
        slice_s: the budget per turn, counted from the first ask in that turn.
    """

    def __init__(self, slice_s: float = 0.002) -> None:
        self._slice_s = slice_s
        self._began: float | None = None
        self.deferred = 0

    def spent(self) -> bool:
        """Whether this turn's budget is used up (then put the work off to the next turn)."""
        now = time.perf_counter()
        if self._began is None:
            self._began = now
            # Runs first thing in the next turn, before the work put off meanwhile.
            asyncio.get_running_loop().call_soon(self._next_turn)
            return False
        if now - self._began < self._slice_s:
            return False
        self.deferred += 1
        return True

    def _next_turn(self) -> None:
        self._began = None


EXPIRIES = TurnBudget()
"""The budget shared by connection timeouts (request head, lingering close)."""


class _Drain(asyncio.Protocol):
    """A closing connection's protocol: reads and drops what the peer still sends, within a
    byte and time budget, and hands ``connection_lost`` to the protocol it replaced."""

    def __init__(
        self, transport: asyncio.Transport, inner: asyncio.BaseProtocol, timeout_s: float,
        max_bytes: int,
    ) -> None:  # fmt: skip
        self._transport = transport
        self._inner = inner
        self._left = max_bytes
        self._timer: asyncio.Handle = asyncio.get_running_loop().call_later(timeout_s, self._late)

    def _late(self) -> None:
        if EXPIRIES.spent():
            self._timer = asyncio.get_running_loop().call_soon(self._late)
            return
        self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self._left -= len(data)
        if self._left < 0:
            self._transport.abort()

    def eof_received(self) -> bool:
        return False  # the peer is done too: close, with nothing unread (so no reset)

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()
        self._inner.connection_lost(exc)


def close_gracefully(
    transport: asyncio.Transport, *, timeout_s: float = LINGER_S, max_bytes: int = LINGER_BYTES
) -> None:
    """Close a connection whose peer may still be sending, without destroying our answer.

    Closing a socket with unread input makes the kernel send a reset, and a reset can discard
    the answer (a 413, a ``FatalError``) before the peer reads it. So: send what is buffered,
    then shut down writing (FIN), read and drop the peer's input until it closes too, or for
    at most ``timeout_s`` and ``max_bytes``, then close. The transport's protocol gets no
    more data, and still gets ``connection_lost``; nothing may be written after this.
    """
    if transport.is_closing():
        return
    inner = transport.get_protocol()
    if isinstance(inner, _Drain):
        return
    if not transport.can_write_eof():
        transport.close()
        return
    transport.set_protocol(_Drain(transport, inner, timeout_s, max_bytes))
    try:
        transport.write_eof()
    except OSError:
        # The peer is gone (it reset the connection, ENOTCONN): nothing left to linger for.
        transport.abort()
        return
    transport.resume_reading()  # it may have been paused for flow control


def _unsent(transport: asyncio.Transport) -> int:
    """Bytes written to ``transport`` that its peer has not taken: the transport's buffer plus
    the kernel's send queue (``TIOCOUTQ``, where there is one). The transport's buffer alone
    does not show a slow reader's progress: it shrinks only once the kernel's queue, which
    can hold megabytes, has room for a third of itself."""
    unsent = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    fileno = getattr(sock, "fileno", None)
    if callable(fileno):
        with contextlib.suppress(OSError, ValueError):
            queued = fcntl.ioctl(fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
            unsent += struct.unpack("i", queued)[0]
    return unsent


class _ClosesGracefully:
    """The transport as uvicorn's request cycle sees it: its ``close`` (after a response with
    ``Connection: close``, such as a 413 sent while the body still arrives) is graceful."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def close(self) -> None:
        close_gracefully(self._transport)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol plus admission, a request-head timeout and size limit, and
    a send timeout: a client that takes none of its response for ``client_send_timeout_s`` is
    dropped (aborted), as a sync socket is, so an unread response is not held for ever.

    Built by uvicorn for every accepted connection (``http=`` in its config, with the
    gateway's :class:`Admission` and limits bound first). The connection's :class:`Ticket`
    travels with the transport: on a WebSocket upgrade it goes to the WebSocket protocol.
    """

    def __init__(
        self, admission: Admission, limits: ConnectionLimits, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._admission = admission
        self._guard_limits = limits
        self.ticket: Ticket | None = None
        self._admitted = False
        self._head_timer: asyncio.Handle | None = None
        self._in_head = True
        self._head_bytes = 0
        self._head_parsed = 0
        self._head_over = False
        self._send_timer: asyncio.TimerHandle | None = None
        self._send_left = 0  # the write buffer's size when the send timer was last set

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        admitted = self._admission.admit(address)
        if isinstance(admitted, str):
            # Refused before uvicorn sees it: no parser, no task, no log line per connection.
            transport.write(_simple_response(503, "Service Unavailable", "Overloaded", admitted))
            transport.close()
            self.transport = transport
            return
        self.ticket = admitted
        self._admitted = True
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_send_timer()
        self._admission.unsent.resumed(self.transport)
        if self.ticket is not None:
            self.ticket.release()
            self.ticket = None
        if not self._admitted:  # refused in connection_made: uvicorn never set up
            return
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None and self._guard_limits.client_send_timeout_s > 0:
            self._arm_send_timer()
        self._admission.unsent.paused(self.transport, self._drop_for_memory)

    def resume_writing(self) -> None:
        self._stop_send_timer()
        self._admission.unsent.resumed(self.transport)
        super().resume_writing()

    def _drop_for_memory(self) -> None:
        self._stop_send_timer()
        self._admission.dropped("the server holds too many unsent bytes")
        self.transport.abort()

    def _arm_send_timer(self) -> None:
        self._send_left = _unsent(self.transport)
        self._send_timer = asyncio.get_running_loop().call_later(
            self._guard_limits.client_send_timeout_s, self._send_late
        )

    def _stop_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_late(self) -> None:
        self._send_timer = None
        transport = self.transport
        # Closing counts too: uvicorn's keep-alive timer closes a connection whose response
        # is answered, and a closing transport waits for ever to flush what it holds.
        if transport.get_protocol() is not self:
            return
        if _unsent(transport) < self._send_left:
            self._arm_send_timer()  # slow, but it reads: give it another period
            return
        # It took nothing for a whole period: abort (a close would wait on it for ever).
        self._admission.dropped()
        transport.abort()

    def data_received(self, data: bytes) -> None:
        # uvicorn's, plus the head's byte count and a throttled log for malformed requests
        # (uvicorn logs a warning for every one).
        if not self._admitted:
            return  # refused: whatever it sends is ignored until the close completes
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if self._head_over:  # raised by on_url/on_header to stop parsing
                self._head_too_large()
                return
            THROTTLE.log(log, "info", "invalid HTTP request")
            # The parser's reason is one of its fixed strings, never the client's bytes.
            reason = str(exc).strip().rstrip(".") or "malformed"
            self.send_400_response(f"Invalid HTTP request: {reason}")
            return
        if self._in_head and not self.transport.is_closing():
            # A head still incomplete: count its raw bytes (httptools buffers a partial
            # header however long it grows).
            self._head_bytes += len(data)
            if self._over(self._head_bytes):
                self._head_too_large()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's is text/plain and closes at once; the store's refusals are JSON
        # ``{"code", "message"}``, closed gracefully.
        self._stop_head_timer()
        self._in_head = False
        self.transport.write(_simple_response(400, "Bad Request", "BadRequest", msg))
        close_gracefully(self.transport)

    def _over(self, size: int) -> bool:
        limit = self._guard_limits.max_header_bytes
        return limit > 0 and size > limit

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        self._head_parsed += size
        if self._over(self._head_parsed):
            self._head_over = True
            raise ValueError("request head too large")  # httptools stops parsing here

    def _head_too_large(self) -> None:
        limit = self._guard_limits.max_header_bytes
        self._reject(
            431, "Request Header Fields Too Large", "HeadersTooLarge",
            f"request head over {limit} bytes",
        )  # fmt: skip

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_parsed = 0
        if self._head_timer is None:
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = _ClosesGracefully(self.transport)  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        if self.transport.get_protocol() is not self:
            return  # closing gracefully (or upgraded): no next request, no keep-alive timer
        super().on_response_complete()
        # Between requests uvicorn's keep-alive timeout runs; the next head gets its own timer
        # from its first byte (on_message_begin).
        self._in_head = True
        self._head_bytes = 0
        self._head_parsed = 0

    def handle_websocket_upgrade(self) -> None:
        self._stop_send_timer()
        super().handle_websocket_upgrade()
        ticket, self.ticket = self.ticket, None
        upgraded = self.transport.get_protocol()
        if ticket is not None:
            if hasattr(upgraded, "adopt_ticket"):
                upgraded.adopt_ticket(ticket)
            else:  # not ours: release now rather than leak the place
                ticket.release()

    def _start_head_timer(self) -> None:
        timeout = self._guard_limits.header_timeout_s
        if timeout > 0:
            self._head_timer = asyncio.get_running_loop().call_later(timeout, self._head_late)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            if EXPIRIES.spent():
                self._head_timer = asyncio.get_running_loop().call_soon(self._head_late)
                return
            self._reject(
                408, "Request Timeout", "RequestTimeout",
                f"no complete request head within {self._guard_limits.header_timeout_s:g} s",
            )  # fmt: skip

    def _reject(self, status: int, phrase: str, code: str, message: str) -> None:
        self._stop_head_timer()
        self._in_head = False
        THROTTLE.log(log, "info", "request refused", status=status, code=code)
        self.transport.write(_simple_response(status, phrase, code, message))
        close_gracefully(self.transport)


ACCEPT_BATCH = 32
"""Connections accepted per loop turn: asyncio's accept loop takes the listen ``backlog`` as
its batch, and 2,048 connections set up in one turn (accept, parser, transport, head timer
each) held every push for 100 ms and more during a connection storm. ``serve`` listens with
this, then widens the kernel's queue again (:func:`widen_listen_queue`)."""

LISTEN_BACKLOG = 2048
"""The kernel's queue of connections not accepted yet (uvicorn's default)."""


def widen_listen_queue(servers: Iterable[asyncio.Server], backlog: int = LISTEN_BACKLOG) -> None:
    """Give listening sockets a ``backlog``-long kernel queue, leaving asyncio's accept batch as
    it was set (its ``backlog`` argument, see :data:`ACCEPT_BATCH`): a burst of connections
    waits in the kernel, not in SYN retries, and is taken a batch per loop turn."""
    for server in servers:
        for sock in server.sockets:
            # A duplicate descriptor of the same socket: listen() applies to the socket.
            with socket.socket(fileno=os.dup(sock.fileno())) as same:
                same.listen(backlog)


def raise_fd_limit() -> int:
    """Raise this process's soft file-descriptor limit to its hard limit; returns the soft
    limit now in force (warning when it stays low)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Route the loop's unhandled-error reports through :data:`THROTTLE`.

    asyncio reports every failed ``accept()`` (``socket.accept() out of system resource``)
    with a traceback; with descriptors exhausted that is a line per retry and filled 230 MB
    of log in 40 s. The cap in :class:`Admission` keeps descriptors free, this keeps the log
    readable if they run out anyway.
    """
    default = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "unhandled error"))
        dropped = THROTTLE.allow(message)
        if dropped is None:
            return
        if dropped:
            context = {**context, "message": f"{message} ({dropped} similar suppressed)"}
        if default is not None:
            default(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


_LIBC: Any = None


def return_memory() -> None:
    """Hand freed heap back to the OS (glibc keeps it otherwise): after a burst, RSS falls."""
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        _LIBC = ctypes.CDLL(name) if name else False
    if _LIBC and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
