"""The sync WebSocket's asyncio side: websockets' sans-I/O ``ServerProtocol`` in an asyncio.Protocol.

uvicorn serves HTTP and, on an upgrade, builds its ``ws_protocol_class``, calls
``connection_made(transport)`` and ``data_received(request head)`` and hands the transport to
it. :class:`SyncSocket` is that class. For ``/api/sync`` and ``/api/{version}/sync`` it completes
the handshake itself and drives a :class:`SyncConnection` from ``data_received`` and the
transport's flow control, with no ASGI scope, receive queue or task per socket (an idle
connection is the transport, the websockets parser, the sync state and its subscriptions). Any
other path goes to uvicorn's own WebSocket protocol and the ASGI app, as before.

Input bounds, in bytes as they arrive: websockets' parser caps a message across all its
fragments (``max_size``); this class caps the fragment count, keeps fragments in one growing
buffer (a list of 8 million 1-byte fragments held over 1 GB), and counts every socket's
unfinished-message bytes against one server-wide budget (``max_partial_bytes``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
import time
from typing import Any, cast
from urllib.parse import unquote

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from marketpulse.reactive.admission import Ticket, close_gracefully
from marketpulse.reactive.gateway import Gateway
from marketpulse.reactive.sync.connection import SyncConnection
from marketpulse.reactive.sync.protocol import too_many_query_changes

__all__ = ["SyncSocket", "is_sync_path"]

_SYNC_PATH = re.compile(r"/api(?:/[^/]+)?/sync")
_SLASHES = re.compile(r"/{2,}")
_WS_LOG = logging.getLogger("marketpulse.sync.websocket")
_OPEN = State.OPEN
# How long a closing handshake may wait for the client's close frame.
_CLOSE_TIMEOUT_S = 10.0
_TEXT = 0x81  # FIN + text opcode


def _frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked, unfragmented text frame."""
    size = len(payload)
    if size < 126:
        header = bytes((_TEXT, size))
    elif size < 65536:
        header = struct.pack("!BBH", _TEXT, 126, size)
    else:
        header = struct.pack("!BBQ", _TEXT, 127, size)
    return header + payload


class _LastFrame:
    """The frame of the last payload sent, by identity: a fan-out writes one shared encoding
    (``SharedTransitions``) to every socket in a row, so it is framed once, not per socket.
    Holding the payload keeps its identity from being reused; the pair is swapped whole, so
    stores on two threads of one process never see one's payload with the other's frame."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = (b"", _frame(b""))

    def __call__(self, payload: bytes) -> bytes:
        last = self._last
        if payload is last[0]:
            return last[1]
        frame = _frame(payload)
        self._last = (payload, frame)
        return frame


_framed = _LastFrame()


def is_sync_path(target: str) -> bool:
    """Whether a request target is the sync endpoint (any version; duplicate slashes collapse)."""
    path = _SLASHES.sub("/", unquote(target.partition("?")[0]))
    return _SYNC_PATH.fullmatch(path) is not None


# Bytes of input parsed at a time (see ``data_received``).
_FEED_BYTES = 8 * 1024
_CHECK_BEFORE_DECODING = 256 * 1024  # smaller text messages are decoded before any check


class SyncSocket(asyncio.Protocol):
    """One upgraded connection: the sync endpoint served directly, other paths through ASGI.

    Args:
        gateway: the engine and everything the front doors share.
        config: uvicorn's config (passed by uvicorn; used only to hand other paths to ASGI).
        server_state: uvicorn's server state (its connection set drives graceful shutdown).
        app_state: uvicorn's lifespan state, for the ASGI hand-off.
    """

    __slots__ = (
        "_app_state",
        "_asgi",
        "_closer",
        "_config",
        "_conn",
        "_fd",
        "_fragments",
        "_gw",
        "_lingering",
        "_partial",
        "_server_state",
        "_ticket",
        "_transport",
        "_ws",
    )

    def __init__(
        self,
        gateway: Gateway,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._gw = gateway
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._transport: asyncio.Transport | None = None
        self._ws: ServerProtocol | None = None
        self._conn: SyncConnection | None = None
        self._asgi: WebSocketsSansIOProtocol | None = None
        # An unfinished fragmented message: its opcode, its bytes so far, its frame count.
        self._fragments: tuple[Opcode, bytearray, int] | None = None
        self._closer: asyncio.TimerHandle | None = None
        self._partial = 0  # this socket's share of the server's unfinished-message budget
        self._ticket: Ticket | None = None
        self._lingering = False  # closing gracefully: nothing more in or out
        self._fd = -1  # the socket's file descriptor, for the threaded fan-out (-1: none)

    def adopt_ticket(self, ticket: Ticket) -> None:
        """Take over the connection's admission place (released when the socket goes)."""
        self._ticket = ticket

    # ----------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, but not always an asyncio.Transport subclass: uvloop's are not.
        self._transport = cast(asyncio.Transport, transport)
        # uvicorn's graceful shutdown calls shutdown() on every member and waits for the set
        # to empty.
        self._server_state.connections.add(self)

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        if ws is None:
            if self._asgi is not None:
                self._asgi.data_received(data)
            else:
                self._handshake(data)
            return
        if self._conn is not None:
            self._conn.read_at = time.perf_counter()
        if len(data) <= _FEED_BYTES:
            self._feed(ws, data)
        else:
            # A piece at a time: websockets parses every frame of what it is given before any
            # can be looked at, and 64 KiB of 7-byte fragments (9,000 frames) held the loop
            # ~50 ms before the fragment limit could stop it.
            view = memoryview(data)
            for start in range(0, len(data), _FEED_BYTES):
                if not self._feed(ws, view[start : start + _FEED_BYTES]):
                    break
        self._write_out(ws.data_to_send())
        self._count_partial(ws)

    def _feed(self, ws: ServerProtocol, data: bytes | memoryview) -> bool:
        """Parse ``data`` and act on its frames; False once the socket stops taking input."""
        ws.receive_data(data)  # type: ignore[arg-type]  # appended to a bytearray: any buffer
        for event in ws.events_received():
            if isinstance(event, Frame):
                self._frame(event)
                if (
                    self._conn is None
                    or self._ws is None
                    or self._transport is None
                    or self._transport.is_closing()
                ):
                    return False
        return True

    def _count_partial(self, ws: ServerProtocol) -> None:
        """Track the unfinished message this socket holds: its age and the server's budget."""
        conn = self._conn
        held = len(ws.reader.buffer)
        if self._fragments is not None:
            held += len(self._fragments[1])
        if held == self._partial:
            if held == 0 and conn is not None:
                conn.partial_since = None
            return
        budget = self._gw.partial
        budget.change(self, held - self._partial)
        self._partial = held
        if conn is None:
            return
        if held == 0:
            conn.partial_since = None
        elif conn.partial_since is None:
            conn.partial_since = asyncio.get_running_loop().time()
        # Over the budget: the sockets holding the most go, not the one that crossed it (a
        # client sending one ordinary message must not pay for others' unfinished ones).
        while budget.over():
            holder = budget.largest()
            if not isinstance(holder, SyncSocket):
                break
            self._gw.metrics.refused.labels("partial_bytes").inc()
            holder.shed(1013, "Overloaded: the server holds too many unfinished messages")

    def shed(self, code: int, reason: str) -> None:
        """Close without a ``FatalError`` (see ``SyncConnection.shed``) and stop taking input."""
        if self._conn is not None:
            self._conn.shed(code, reason)
        if self._transport is not None:
            self._close_gracefully(self._transport)
        else:
            self._drop_parser()

    def eof_received(self) -> bool | None:
        if self._asgi is not None:
            self._asgi.eof_received()
        return None  # the transport closes; connection_lost releases everything

    def pause_writing(self) -> None:
        if self._conn is not None:
            self._conn.pause_writing()
            if self._transport is not None:
                self._gw.admission.unsent.paused(self._transport, self._drop_for_memory)
        elif self._asgi is not None:
            self._asgi.pause_writing()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._gw.admission.unsent.resumed(self._transport)
        if self._conn is not None:
            self._conn.resume_writing()
        elif self._asgi is not None:
            self._asgi.resume_writing()

    def _drop_for_memory(self) -> None:
        if self._conn is not None:
            self._conn.drop("the server holds too many unsent bytes")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._gw.admission.unsent.resumed(self._transport)
        if self._ticket is not None:
            self._ticket.release()
            self._ticket = None
        self._drop_parser()
        if self._asgi is not None:
            self._asgi.connection_lost(exc)
            return
        self._server_state.connections.discard(self)
        if self._closer is not None:
            self._closer.cancel()
            self._closer = None
        conn, self._conn = self._conn, None  # no cycle left between socket and connection
        if conn is not None:
            conn.connection_lost()

    def shutdown(self) -> None:
        """Server shutdown (uvicorn): close with 1012 (service restart) and drop the socket."""
        if self._asgi is not None:
            self._asgi.shutdown()
            return
        self._gw.fanout.release(self)
        ws, transport = self._ws, self._transport
        if ws is not None and ws.state is _OPEN:
            ws.send_close(1012)
            self._write_out(ws.data_to_send())
        if transport is not None:
            transport.close()

    # ----------------------------------------------------------------- Socket (for the connection)

    def send_text(self, payload: bytes) -> None:
        """Write one unfragmented text frame now.

        Framed here rather than through ``ServerProtocol.send_text``: the fan-out writes every
        Transition through this, and a frame header plus one concatenation is all a server
        frame needs (no mask, no compression, no fragmentation).
        """
        ws = self._ws
        if ws is None or ws.state is not _OPEN or self._transport is None:
            return
        frame = _framed(payload)
        fanout = self._gw.fanout
        if fanout.collecting and fanout.take(self, self._fd, self._transport, frame):
            return  # written with the rest of the fan-out, maybe on another thread
        self._transport.write(frame)

    def close(self, code: int, reason: str) -> None:
        """Send a close frame; the TCP connection closes on the client's answer or a timeout."""
        ws, transport = self._ws, self._transport
        if ws is None or transport is None or ws.state is not _OPEN:
            return
        ws.send_close(code, reason)
        self._write_out(ws.data_to_send())
        if not transport.is_closing():
            # abort, not close: a client that does not answer may not read either.
            self._closer = asyncio.get_running_loop().call_later(_CLOSE_TIMEOUT_S, transport.abort)

    def abort(self) -> None:
        """Drop the TCP connection now (a client that stopped reading)."""
        self._gw.fanout.release(self)
        if self._transport is not None:
            self._transport.abort()

    def pause_reading(self) -> None:
        """Read nothing more from the client (its connection's queue is full)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the client again."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # ----------------------------------------------------------------- internals

    def _handshake(self, head: bytes) -> None:
        transport = self._transport
        assert transport is not None
        line = head[: head.find(b"\r\n")].split(b" ")
        target = line[1].decode("latin-1") if len(line) == 3 else ""
        if not is_sync_path(target):
            self._hand_to_asgi(head)
            return
        max_size = self._gw.limits.max_frame_bytes
        handshake = ServerProtocol(max_size=max_size, logger=_WS_LOG)
        # uvicorn passes the whole request head in one call (it rebuilt it from its parser).
        handshake.receive_data(head)
        events = handshake.events_received()
        if not (events and isinstance(events[0], Request)):
            response = handshake.reject(400, "Bad WebSocket handshake\n")
        elif not self._gw.origins.websocket_allowed(
            events[0].headers.get("Origin"), events[0].headers.get("Host")
        ):
            self._gw.metrics.refused.labels("origin").inc()
            response = handshake.reject(403, "Origin not allowed\n")
        else:
            response = handshake.accept(events[0])
        handshake.send_response(response)
        self._write_out(handshake.data_to_send())
        if response.status_code != 101:
            transport.close()
            return
        # A fresh parser for the frames: the handshake's parser generator keeps the request
        # (its headers, ~2.7 KiB) alive for as long as it runs, i.e. the whole connection.
        self._ws = ServerProtocol(state=_OPEN, max_size=max_size, logger=_WS_LOG)
        # Once per connection: the threaded fan-out writes to the descriptor (asyncio's and
        # uvloop's transports both expose a socket object with fileno()).
        sock = transport.get_extra_info("socket")
        fileno = getattr(sock, "fileno", None)
        self._fd = fileno() if callable(fileno) else -1
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        self._conn = SyncConnection(self._gw, self, address)

    def _hand_to_asgi(self, head: bytes) -> None:
        proto = WebSocketsSansIOProtocol(
            config=self._config, server_state=self._server_state, app_state=self._app_state
        )
        # uvicorn has already made this object the transport's protocol: forward to it.
        self._server_state.connections.discard(self)
        self._asgi = proto
        assert self._transport is not None
        proto.connection_made(self._transport)
        proto.data_received(head)

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._message(opcode, frame.data)
            else:
                self._fragments = (opcode, bytearray(frame.data), 1)
        elif opcode is Opcode.CONT and self._fragments is not None:
            first, parts, count = self._fragments
            limit = self._gw.limits.max_fragments
            if 0 < limit <= count:
                self._gw.metrics.refused.labels("fragments").inc()
                self._refuse(f"TooManyFragments: a message in over {limit} frames")
                return
            parts += frame.data
            self._fragments = (first, parts, count + 1)
            if frame.fin:
                self._fragments = None
                self._message(first, parts)
        # PING, PONG and CLOSE: websockets answers them itself (data_to_send).

    def _refuse(self, error: str) -> None:
        """FatalError, then stop taking input: a client over a limit gets no further bytes in
        (what it still sends is dropped, so that its reset cannot destroy the error)."""
        if self._conn is not None:
            self._conn.fail(error)
        if self._transport is not None:
            self._close_gracefully(self._transport)

    def _close_gracefully(self, transport: asyncio.Transport) -> None:
        self._gw.fanout.release(self)  # what the fan-out took goes out before the FIN
        self._drop_parser()  # nothing more in or out (send_text checks it)
        self._lingering = True
        close_gracefully(transport)

    def _drop_parser(self) -> None:
        """Forget the frame parser and free its input now, and this socket's share of the
        unfinished-message budget with it.

        The parser and its generator form a reference cycle, so the bytes of an unfinished frame
        (up to ``max_frame_bytes``) would otherwise stay until the cyclic GC's next full pass,
        and the serve command freezes long-lived objects out of those (``_gc``): 40 refused
        15 MiB frames held ~600 MiB for good.
        """
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.reader.buffer.clear()
            ws.parser.close()  # its frame refers back to ws: no cycle left for the collector
        self._fragments = None
        if self._partial:
            self._gw.partial.change(self, -self._partial)
            if self._partial >= 1024 * 1024:
                self._gw.memory.soon()  # its buffer was big: hand the heap back
            self._partial = 0

    def _message(self, opcode: Opcode, data: bytes | bytearray | memoryview) -> None:
        conn = self._conn
        if conn is None:
            return
        size = len(data)
        if opcode is Opcode.BINARY:
            conn.message_received(bytes(data), size)
            return
        if size > self._gw.limits.max_message_bytes:
            conn.message_received("", size)  # MessageTooLarge, counted in bytes, not decoded
            return
        if size >= _CHECK_BEFORE_DECODING:
            # A query set over the limit is refused before its text is decoded (6 MB: ~5-9 ms).
            raw = bytes(data) if isinstance(data, memoryview) else data
            error = too_many_query_changes(raw, self._gw.limits.max_query_changes)
            if error is not None:
                self._gw.metrics.refused.labels("query_changes").inc()
                self._refuse(error)
                return
        try:
            text = str(data, "utf-8")
        except UnicodeDecodeError:
            conn.fail("WSMessageInvalidJson: a text frame that is not UTF-8")
            return
        conn.message_received(text, size)

    def _write_out(self, chunks: list[bytes]) -> None:
        # Frames this socket gave the fan-out writer go first (a close frame after them).
        self._gw.fanout.release(self)
        transport = self._transport
        if transport is None or self._lingering:
            return  # gone, or closing gracefully (no write after the FIN)
        for chunk in chunks:
            if chunk:
                transport.write(chunk)
            else:
                # websockets' end-of-stream marker: the server closes TCP after the close
                # handshake (or after failing the connection, as over the frame size).
                self._close_gracefully(transport)
                return
