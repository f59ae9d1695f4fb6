"""A light asyncio client of the sync protocol, written to the spec.

Tests and benchmarks use it as a load generator and protocol probe, and the pipeline's store
client (``pipeline/_store.py``) writes its batches through it.

It sends what the official clients send (``Connect``, then ``ModifyQuerySet`` with
``newVersion = baseVersion + 1``, ``Mutation`` with ``args: [obj]``) and checks what they check
(a continuous Transition chain). Application code should use the official ``convex`` clients.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from marketpulse._aio import cancel_and_wait
from marketpulse.reactive.values import json_to_value, value_to_json

__all__ = ["LightSyncClient", "RawSubscriber", "ServerError", "TransitionReceived"]

_READ_BUFFER_BYTES = 256 * 1024  # asyncio's own read size
# A server frame's first byte: FIN set, and the opcode (RFC 6455 section 5.2).
_FIN_TEXT, _FIN_CLOSE, _FIN_PING, _FIN_PONG = 0x81, 0x88, 0x89, 0x8A
_read_buffer = threading.local()


class _RedactAuthenticate(logging.Filter):
    """Hides an ``Authenticate`` frame in ``websockets``' DEBUG frame lines (``"> %s"``, the
    frame): its text is the admin key or the user's token (the line showed the key's last
    twenty characters)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            isinstance(args, tuple)
            and args
            and isinstance(args[0], Frame)
            and b'"type":"Authenticate"' in args[0].data[:32]
        ):
            record.args = ("TEXT Authenticate [redacted]", *args[1:])
        return True


_FRAME_LOG = logging.getLogger("websockets.client.sync")
_FRAME_LOG.addFilter(_RedactAuthenticate())


class ServerError(Exception):
    """The server sent FatalError or AuthError, or broke the Transition chain."""


_CHAIN_START = {"querySet": 0, "identity": 0, "ts": "AAAAAAAAAAA="}


def _connect_message(session_id: str) -> dict[str, Any]:
    """The ``Connect`` that opens a session, as the official clients send it."""
    return {
        "type": "Connect",
        "sessionId": session_id,
        "connectionCount": 0,
        "lastCloseReason": "InitialConnect",
        "clientTs": int(time.time() * 1000),
    }


@dataclass
class TransitionReceived:
    """One Transition as seen by the client, with its local receive time."""

    received_at: float
    start: dict[str, Any]
    end: dict[str, Any]
    modifications: list[dict[str, Any]]
    raw_size: int


@dataclass
class LightSyncClient:
    """One WebSocket, one query set; ``await client.connect()`` first."""

    url: str
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    values: dict[int, Any] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    transitions: list[TransitionReceived] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    """Every server message in arrival order (when ``keep_transitions``)."""
    keep_transitions: bool = True
    _ws: ClientConnection | None = None
    _query_set: int = 0
    _identity: int = 0
    _next_query: int = 0
    _next_request: int = 0
    _version: dict[str, Any] = field(default_factory=lambda: dict(_CHAIN_START))
    _pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _updated: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None
    failure: BaseException | None = None

    @staticmethod
    def ws_url(http_url: str, version: str = "1.48.0") -> str:
        """The sync WebSocket URL of a store at ``http_url`` (``https`` maps to ``wss``)."""
        parts = urlsplit(http_url)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        path = parts.path.rstrip("/") + f"/api/{version}/sync"
        return urlunsplit((scheme, parts.netloc, path, "", ""))

    async def connect(self) -> LightSyncClient:
        self._ws = await connect(
            self.url,
            max_size=None,
            compression=None,
            ping_interval=None,
            close_timeout=1.0,
            logger=_FRAME_LOG,
        )
        await self._send(_connect_message(self.session_id))
        self._reader = asyncio.create_task(self._read())
        return self

    async def close(self) -> None:
        if self._reader:
            await cancel_and_wait(self._reader)
        if self._ws:
            await self._ws.close()
        # The reader is gone: nothing else would ever answer a request still waiting (several
        # may be in flight on one socket, and the pipeline's writer waits for each).
        if self.failure is None:
            self.failure = ServerError("connection closed")
        self._fail_pending(ServerError("connection closed"))

    def _fail_pending(self, error: ServerError) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send(orjson.dumps(message).decode())

    async def send_raw(self, data: str | bytes, *, text: bool | None = None) -> None:
        """Send anything, well-formed or not (for bad-input tests); ``text=True`` sends bytes
        as a text frame, unchecked."""
        assert self._ws is not None
        await self._ws.send(data, text=text)

    async def _modify(self, modification: dict[str, Any]) -> None:
        base = self._query_set
        self._query_set += 1
        await self._send(
            {
                "type": "ModifyQuerySet",
                "baseVersion": base,
                "newVersion": base + 1,
                "modifications": [modification],
            }
        )

    async def subscribe(self, path: str, args: dict[str, Any] | None = None) -> int:
        query_id = self._next_query
        self._next_query += 1
        await self._modify(
            {
                "type": "Add",
                "queryId": query_id,
                "udfPath": path,
                "args": [value_to_json(args or {})],
            }
        )
        return query_id

    async def unsubscribe(self, query_id: int) -> None:
        await self._modify({"type": "Remove", "queryId": query_id})

    async def authenticate(self, token_type: str, value: str | None = None) -> None:
        message: dict[str, Any] = {
            "type": "Authenticate",
            "baseVersion": self._identity,
            "tokenType": token_type,
        }
        if value is not None:
            message["value"] = value
        self._identity += 1
        await self._send(message)

    async def request(
        self,
        kind: str,
        path: str,
        args: dict[str, Any] | None = None,
        request_id: int | None = None,
    ) -> dict[str, Any]:
        """Send a Mutation or Action and wait for its response message.

        Raises:
            ServerError: The connection failed before or while waiting for the response.
        """
        future = await self.send_request(kind, path, args, request_id)
        response: dict[str, Any] = await future
        return response

    async def send_request(
        self,
        kind: str,
        path: str,
        args: dict[str, Any] | None = None,
        request_id: int | None = None,
    ) -> asyncio.Future[dict[str, Any]]:
        """Send a Mutation or Action; returns the future of its response message.

        Several requests may be in flight on one socket: each response is matched to its
        request by ``requestId``. If the connection fails, every pending future fails with
        :class:`ServerError`.

        Raises:
            ServerError: The connection had already failed or closed (nothing was sent).
        """
        if self.failure is not None:
            # The reader has stopped: nothing would ever resolve this request.
            raise ServerError(f"connection lost: {self.failure!r}")
        if request_id is None:
            request_id = self._next_request
            self._next_request += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._send(
                {
                    "type": kind,
                    "requestId": request_id,
                    "udfPath": path,
                    "args": [value_to_json(args or {})],
                }
            )
        except BaseException as exc:
            self._pending.pop(request_id, None)
            if isinstance(exc, ConnectionClosed):
                # The socket closed before the reader saw it: the same failure as above, and
                # callers should not have to know websockets' exceptions to tell it apart.
                raise ServerError(f"connection lost: {exc!r}") from exc
            raise
        return future

    async def wait_for(self, query_id: int, predicate: Any = None, timeout: float = 10.0) -> Any:
        """Wait until the query has a value (satisfying ``predicate``, if given)."""

        async def _wait() -> Any:
            while True:
                if self.failure is not None:
                    raise self.failure
                if query_id in self.values and (
                    predicate is None or predicate(self.values[query_id])
                ):
                    return self.values[query_id]
                if query_id in self.errors and predicate is None:
                    raise ServerError(self.errors[query_id])
                self._updated.clear()
                await self._updated.wait()

        async with asyncio.timeout(timeout):
            return await _wait()

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                now = time.perf_counter()
                message = orjson.loads(raw)
                if self.keep_transitions:
                    self.messages.append(message)
                kind = message["type"]
                if kind == "Transition":
                    self._on_transition(message, now, len(raw))
                elif kind in ("MutationResponse", "ActionResponse"):
                    future = self._pending.pop(message["requestId"], None)
                    if future is not None and not future.done():
                        future.set_result(message)
                elif kind in ("FatalError", "AuthError"):
                    raise ServerError(f"{kind}: {message.get('error')}")
                elif kind != "Ping":
                    raise ServerError(f"unexpected message type {kind!r}")
                self._updated.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Kept for the caller (wait_for/request raise it); the reader just stops.
            self.failure = exc
            self._updated.set()
            self._fail_pending(ServerError(f"connection lost: {exc!r}"))
            return
        self.failure = ServerError("connection closed")
        self._updated.set()
        self._fail_pending(ServerError("connection closed"))

    def _on_transition(self, message: dict[str, Any], now: float, size: int) -> None:
        if message["startVersion"] != self._version:
            raise ServerError(f"StartVersionMismatch: {message['startVersion']} != {self._version}")
        self._version = message["endVersion"]
        for mod in message["modifications"]:
            query_id = mod["queryId"]
            if mod["type"] == "QueryUpdated":
                self.values[query_id] = json_to_value(mod["value"])
                self.errors.pop(query_id, None)
            elif mod["type"] == "QueryFailed":
                self.errors[query_id] = mod["errorMessage"]
                self.values.pop(query_id, None)
            else:
                self.values.pop(query_id, None)
                self.errors.pop(query_id, None)
        if self.keep_transitions:
            self.transitions.append(
                TransitionReceived(
                    now,
                    message["startVersion"],
                    message["endVersion"],
                    message["modifications"],
                    size,
                )
            )


class RawSubscriber(asyncio.BufferedProtocol):
    """The leanest spec client: one socket, one query, Transitions timestamped on arrival.

    A plain asyncio protocol, so a benchmark process can hold hundreds of them and timestamp
    each Transition the moment its bytes are parsed, without a task switch per socket.
    websockets' sans-I/O ``ClientProtocol`` does the handshake and frames what it sends; the
    store's frames are parsed here once the socket is open (``_frames_received`` says why).
    Sends what the official clients send (``Connect``, then ``ModifyQuerySet`` 0→1 with
    ``args: [obj]``) and checks the chain.

    A buffered protocol: asyncio reads into one reused buffer per thread (``recv_into``)
    instead of ``recv(256 KiB)``, whose fresh 256 KiB allocation per read cost ~13 µs on this
    machine, more than parsing the frame and its JSON together (~5 µs).

    ``on_transition(message, received_ns)`` is called for every Transition.
    """

    def __init__(
        self,
        url: str,
        path: str,
        args: dict[str, Any],
        on_transition: Any,
    ) -> None:
        self._ws = ClientProtocol(parse_uri(url), max_size=None)
        self._query = {"type": "Add", "queryId": 0, "udfPath": path, "args": [value_to_json(args)]}
        self._on_transition = on_transition
        self._version: Any = _CHAIN_START
        self._transport: asyncio.Transport | None = None
        # Bytes of a frame not complete yet, once frames are parsed here (None until then).
        self._unparsed: bytearray | None = None
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.failure: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._ws.send_request(self._ws.connect())
        self._flush()

    def _flush(self) -> None:
        assert self._transport is not None
        for data in self._ws.data_to_send():
            if data:
                self._transport.write(data)
            else:  # the protocol asks for EOF
                self._transport.close()

    def _send(self, message: dict[str, Any]) -> None:
        self._ws.send_text(orjson.dumps(message))

    def get_buffer(self, sizehint: int) -> memoryview:
        # asyncio calls get_buffer, recv_into and buffer_updated back to back on one thread,
        # and buffer_updated copies the bytes out: one buffer per thread serves every socket.
        view: memoryview | None = getattr(_read_buffer, "view", None)
        if view is None:
            view = _read_buffer.view = memoryview(bytearray(_READ_BUFFER_BYTES))
        return view

    def buffer_updated(self, nbytes: int) -> None:
        received_ns = time.time_ns()
        if self._unparsed is not None:
            self._frames_received(nbytes, received_ns)
            return
        self._ws.receive_data(bytes(_read_buffer.view[:nbytes]))
        for event in self._ws.events_received():
            if isinstance(event, Response):
                if event.status_code != 101:
                    # Refused (a full server's 503, a late head's 408): say so at once, rather
                    # than write a Connect into a closed protocol and wait for a Transition.
                    body = (event.body or b"")[:200].decode("utf-8", "replace")
                    self._fail(ServerError(f"HandshakeRefused: HTTP {event.status_code} {body}"))
                    return
                self._send(_connect_message(str(uuid.uuid4())))
                self._send(
                    {
                        "type": "ModifyQuerySet",
                        "baseVersion": 0,
                        "newVersion": 1,
                        "modifications": [self._query],
                    }
                )
                # The store sends nothing before it reads the Connect just queued, so nothing
                # of a frame can precede this point: from the next read on, frames are parsed
                # here (_frames_received).
                self._unparsed = bytearray()
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                handled = self._text_received(event.data, received_ns)
                if not handled:
                    return
        self._flush()

    def _frames_received(self, nbytes: int, received_ns: int) -> None:
        """Parse the store's frames out of the read buffer's first ``nbytes``.

        Hand-parsed rather than through ``ClientProtocol``: its generator-based reader costs
        ~5 µs per frame, a quarter of this subscriber's CPU per receipt in a wide fan-out
        benchmark, where the subscribers share the host's cores with the store. A server's
        frames are simple: unmasked, and this store never fragments or compresses them.
        Pings are answered through ``ClientProtocol``; a close frame closes the socket.
        """
        unparsed = self._unparsed
        assert unparsed is not None
        data: bytearray | memoryview
        if unparsed:  # the rest of a frame split across reads: parse the held bytes in place
            unparsed += _read_buffer.view[:nbytes]
            data = unparsed
        else:
            data = _read_buffer.view[:nbytes]
        pos, end = 0, len(data)
        while end - pos >= 2:
            first, size = data[pos], data[pos + 1]
            head = 2
            if size & 0x80:
                self._fail(ServerError("ProtocolError: a masked frame from the server"))
                return
            if size == 126:
                head, size = 4, int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif size == 127:
                head, size = 10, int.from_bytes(data[pos + 2 : pos + 10], "big")
            if end - pos < head + size:
                break
            payload = data[pos + head : pos + head + size]
            pos += head + size
            if first == _FIN_TEXT:
                if not self._text_received(payload, received_ns):
                    return
            elif first == _FIN_PING:
                self._ws.send_pong(bytes(payload))
                self._flush()
            elif first == _FIN_CLOSE:
                assert self._transport is not None
                self._transport.close()
                return
            elif first != _FIN_PONG:
                self._fail(ServerError(f"ProtocolError: unexpected frame 0x{first:02x}"))
                return
        if data is unparsed:
            del unparsed[:pos]
        else:
            unparsed += data[pos:end]

    def _text_received(self, data: bytes | bytearray | memoryview, received_ns: int) -> bool:
        """Handle one message; False once the socket is failed."""
        message = orjson.loads(data)
        if message["type"] != "Transition":
            return True
        if message["startVersion"] != self._version:
            self._fail(ServerError("StartVersionMismatch"))
            return False
        self._version = message["endVersion"]
        if not self.subscribed.done():
            self.subscribed.set_result(None)
        self._on_transition(message, received_ns)
        return True

    def unparsed(self) -> bytes:
        """The bytes received and not parsed yet: the start of a frame still incomplete (for
        a reader that takes the socket over, as ``bench/_clients.py``'s drain does)."""
        if self._unparsed is None:
            return bytes(self._ws.reader.buffer)
        return bytes(self._unparsed)

    def _fail(self, error: ServerError) -> None:
        self.failure = error
        if not self.subscribed.done():
            self.subscribed.set_exception(error)
        assert self._transport is not None
        self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(ServerError(f"connection lost: {exc!r}"))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
