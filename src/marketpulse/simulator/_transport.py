"""asyncio adapter: one port for REST (h11) and the WebSocket (websockets' sans-I/O protocol).

Why not Starlette + uvicorn: the simulator must push 20,000+ frames a second to a socket, batch
them into one ``transport.write`` per event-loop tick, see the transport's write buffer to apply
Kalshi's per-connection overflow rule (error 25), stall a socket on demand, and answer a bad
handshake with a plain HTTP 401 before the upgrade. A bare ``asyncio.Protocol`` driving h11 for
HTTP and ``websockets.server.ServerProtocol`` for the WebSocket gives all of that directly, with
no per-message ASGI hop; both libraries are sans-I/O, so this module only moves bytes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

import h11
import orjson
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from marketpulse.kalshi.auth import HEADER_KEY, WS_PATH, handshake_logger, verify_headers
from marketpulse.simulator._rest import handle
from marketpulse.simulator._session import Session

if TYPE_CHECKING:
    from marketpulse.simulator._server import Simulator

log = logging.getLogger("marketpulse.simulator")
_HANDSHAKE_LOG = handshake_logger("websockets.server.simulator")

MAX_BODY = 1 << 20
MALFORMED = b'{"type":"orderbook_delta","sid":1,"seq":'  # truncated JSON, on purpose


class Connection(asyncio.Protocol):
    """One TCP connection: HTTP requests until (maybe) an upgrade, then WebSocket frames."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.transport: asyncio.Transport | None = None
        self.http = h11.Connection(h11.SERVER)
        self.request: h11.Request | None = None
        self.body: list[bytes] = []
        self.body_bytes = 0  # counted as it arrives: a sum per chunk was quadratic
        self.ws: ServerProtocol | None = None
        self.session: Session | None = None
        self.stalled_until = 0.0
        self.fragments: list[bytes] = []
        self.closed = False
        self.data_sent = 0
        self.next_drop = 0
        self.next_malformed = 0

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.sim._connections.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            if self.ws is not None:
                self._ws_data(data)
            else:
                self._http_data(data)
        except Exception:  # a bug must not take the server down; drop this connection only
            log.exception("simulator connection error")
            self.abort()

    def eof_received(self) -> bool | None:
        if self.ws is not None:
            self.ws.receive_eof()
            self._write_ws()
        return None

    # ------------------------------------------------------------------------------ HTTP

    def _http_data(self, data: bytes) -> None:
        self.http.receive_data(data)
        while not self.closed:
            try:
                event = self.http.next_event()
            except h11.RemoteProtocolError as exc:
                self._respond(400, {"error": {"code": "bad_request", "message": str(exc)}}, True)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.request = event
                self.body = []
                self.body_bytes = 0
            elif isinstance(event, h11.Data):
                self.body.append(event.data)
                self.body_bytes += len(event.data)
                if self.body_bytes > MAX_BODY:
                    self._respond(
                        413,
                        {"error": {"code": "too_large", "message": "request body too large"}},
                        True,
                    )
                    return
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch_http()
                if self.ws is not None or self.closed:
                    return
                if self.http.our_state is h11.MUST_CLOSE:
                    self.close()
                    return
                self.http.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                self.close()
                return

    def _header(self, name: bytes) -> str | None:
        assert self.request is not None
        for k, v in self.request.headers:
            if k == name:
                return v.decode("latin-1")
        return None

    def _dispatch_http(self) -> None:
        req = self.request
        assert req is not None
        target = req.target.decode("latin-1")
        split = urlsplit(target)
        upgrade = (self._header(b"upgrade") or "").lower() == "websocket"
        if split.path == WS_PATH or upgrade:
            if not upgrade or split.path != WS_PATH:
                self._respond(
                    400 if upgrade else 426,
                    {
                        "error": {
                            "code": "bad_request",
                            "message": f"WebSocket endpoint is {WS_PATH}",
                        }
                    },
                    True,
                )
                return
            self._upgrade(target)
            return
        query: dict[str, str] = {}
        for k, v in parse_qsl(split.query, keep_blank_values=True):
            # A repeated parameter (``tickers=A&tickers=B``) reads like ``tickers=A,B``.
            query[k] = f"{query[k]},{v}" if k in query else v
        if not self._rest_auth_ok(split.path):
            self._respond(
                401,
                {
                    "error": {
                        "code": "authentication_error",
                        "message": "invalid KALSHI-ACCESS signature",
                    }
                },
                False,
            )
            return
        status, body = handle(self.sim, req.method.decode(), split.path, query, b"".join(self.body))
        self._respond(status, body, False)

    def _rest_auth_ok(self, path: str) -> bool:
        """Unsigned REST reads are fine (market data is public); a signature, if sent, must match.

        Checking a signature that is present lets a client's REST signing be tested here.
        """
        sim = self.sim
        assert self.request is not None
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.request.headers}
        if path.startswith("/_sim/") or sim.public_key is None:
            return True
        if not any(k.lower() == HEADER_KEY.lower() for k in headers):
            return True
        return verify_headers(
            sim.public_key,
            headers,
            self.request.method.decode(),
            path,
            key_id=sim.key_id,
            max_skew_ms=sim.config.max_skew_ms,
        )

    def _respond(self, status: int, body: object, close: bool) -> None:
        payload = orjson.dumps(body)
        headers = [("content-type", "application/json"), ("content-length", str(len(payload)))]
        if close:
            headers.append(("connection", "close"))
        try:
            out = self.http.send(h11.Response(status_code=status, headers=headers))
            out = (out or b"") + (self.http.send(h11.Data(data=payload)) or b"")
            out += self.http.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            close = True
            out = b"HTTP/1.1 %d X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" % status
        self.write(out)
        if close:
            self.close()

    # ------------------------------------------------------------------------- handshake

    def _authenticate(self) -> bool | None:
        """True: signed correctly; False: anonymous allowed; None: refuse with 401."""
        sim = self.sim
        if sim.faults.take_refuse():
            return None
        assert self.request is not None
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.request.headers}
        if not any(k.lower() == HEADER_KEY.lower() for k in headers):
            return False if sim.config.allow_anonymous else None
        if sim.public_key is None:
            return None
        ok = verify_headers(
            sim.public_key,
            headers,
            "GET",
            WS_PATH,
            key_id=sim.key_id,
            max_skew_ms=sim.config.max_skew_ms,
        )
        return True if ok else None

    def _upgrade(self, target: str) -> None:
        auth = self._authenticate()
        if auth is None:
            self._respond(
                401,
                {
                    "error": {
                        "code": "authentication_error",
                        "message": "invalid or missing KALSHI-ACCESS signature",
                    }
                },
                True,
            )
            return
        assert self.request is not None
        ws = ServerProtocol(max_size=1 << 20, logger=_HANDSHAKE_LOG)
        raw = (
            b"GET "
            + target.encode("latin-1")
            + b" HTTP/1.1\r\n"
            + b"".join(k + b": " + v + b"\r\n" for k, v in self.request.headers)
            + b"\r\n"
        )
        ws.receive_data(raw)
        events = ws.events_received()
        if not events or not isinstance(events[0], Request):
            self._respond(400, {"error": {"code": "bad_request", "message": "bad handshake"}}, True)
            return
        response = ws.accept(events[0])
        ws.send_response(response)
        self.ws = ws
        if response.status_code != 101:
            self._write_ws()
            self.close()
            return
        self.session = Session(
            self.sim, authenticated=auth, faults=self.sim.faults, legacy=self.sim.config.legacy
        )
        settings = self.sim.faults.settings
        self.next_drop = settings.drop_every
        self.next_malformed = settings.malformed_every
        self.sim._connections.add(self)
        self._write_ws()
        trailing, _closed = self.http.trailing_data
        if trailing:
            self._ws_data(bytes(trailing))

    # ------------------------------------------------------------------------ WebSocket

    def _ws_data(self, data: bytes) -> None:
        ws = self.ws
        assert ws is not None and self.session is not None
        ws.receive_data(data)
        for event in ws.events_received():
            if not isinstance(event, Frame):
                continue
            if event.opcode in (Opcode.TEXT, Opcode.BINARY):
                if event.fin:
                    self.session.receive_data(bytes(event.data))
                    self.check_buffer()  # command replies (snapshots) count against the bound
                else:
                    self.fragments = [bytes(event.data)]
            elif event.opcode is Opcode.CONT and self.fragments:
                self.fragments.append(bytes(event.data))
                if event.fin:
                    self.session.receive_data(b"".join(self.fragments))
                    self.fragments = []
                    self.check_buffer()
        self.flush()

    def check_buffer(self) -> None:
        """Apply the outbound bound: past ``max_buffer_bytes`` every subscription ends with
        error 25, as Kalshi's does when it cannot send fast enough (after each tick's events,
        and after each command: a ``get_snapshot`` reply is as big as a book)."""
        if self.session is not None and self.buffered() > self.sim.config.max_buffer_bytes:
            self.session.buffer_overflowed()

    def stalled(self, now: float) -> bool:
        """True while a stall fault holds this connection's writes back."""
        if self.stalled_until and now >= self.stalled_until:
            self.stalled_until = 0.0
        return bool(self.stalled_until)

    def buffered(self) -> int:
        """Bytes waiting: queued frames plus the transport's write buffer."""
        n = self.transport.get_write_buffer_size() if self.transport else 0
        if self.session is not None:
            n += self.session.pending_bytes()
        return n

    def flush(self) -> None:
        """Send every pending frame in one write (unless stalled)."""
        if self.closed or self.ws is None or self.session is None:
            return
        if self.stalled(asyncio.get_running_loop().time()):
            return
        frames = self.session.data_to_send()
        if frames and self.ws.state is State.OPEN:  # after a close frame, data is dropped
            ws = self.ws
            faults = self.sim.faults
            if faults.take_malformed():
                ws.send_text(MALFORMED)
            for f in frames:
                ws.send_text(f)
        self._write_ws()
        self._periodic_faults()

    def _periodic_faults(self) -> None:
        if self.session is None or not (self.next_drop or self.next_malformed):
            return
        sent = self.session.data_frames
        if self.next_malformed and sent >= self.next_malformed:
            self.next_malformed = sent + self.sim.faults.settings.malformed_every
            self.sim.faults.malformed(1)
        if self.next_drop and sent >= self.next_drop:
            self.sim.faults.counters["dropped"] += 1
            self.abort()

    def _write_ws(self) -> None:
        ws = self.ws
        if ws is None:
            return
        chunks = ws.data_to_send()
        if not chunks:
            return
        eof = chunks[-1] == b""
        self.write(b"".join(chunks))
        if eof:
            self.close()

    def ping(self) -> None:
        """Send Kalshi's heartbeat ping (skipped while stalled)."""
        ws = self.ws
        if ws is not None and ws.state is State.OPEN and not self.closed and not self.stalled_until:
            ws.send_ping(b"heartbeat")
            self._write_ws()

    # --------------------------------------------------------------------------- misc

    def write(self, data: bytes) -> None:
        """Write unless closed."""
        if self.transport is not None and not self.closed and data:
            self.transport.write(data)

    def close(self) -> None:
        """Close after flushing what is buffered."""
        if self.transport is not None and not self.closed:
            self.closed = True
            self.sim._connections.discard(self)
            self.transport.close()

    def abort(self) -> None:
        """Drop the TCP connection at once (no close frame)."""
        if self.transport is not None and not self.closed:
            self.closed = True
            self.sim._connections.discard(self)
            self.transport.abort()
