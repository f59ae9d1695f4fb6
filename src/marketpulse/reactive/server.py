"""ASGI app assembly: sync WebSocket, HTTP API, CORS, health, metrics and the dashboard."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import orjson
import structlog
from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from marketpulse.reactive.gateway import Gateway, Limits
from marketpulse.reactive.http import http_routes
from marketpulse.reactive.sync.connection import ClientGone, SyncConnection

__all__ = ["AbortableWebSocketProtocol", "build_app", "default_static_dir", "uvicorn_config"]

log = structlog.get_logger("marketpulse.server")

_ABORT_EXTENSION = "marketpulse.abort"
_WRITE_EXTENSION = "marketpulse.write_text_frame"
_SLASHES = re.compile(r"/{2,}")


class AbortableWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, plus a way for the app to drop a client that never reads.

    A polite close waits for buffered data the client will never read; abort() does not.
    """

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][_ABORT_EXTENSION] = self.transport.abort
            scope["extensions"][_WRITE_EXTENSION] = self.write_text_frame

    def write_text_frame(self, payload: bytes) -> bool:
        """Write one unfragmented text frame now if the socket can take it; else return False.

        The fan-out hot path: one transport write, no ASGI round trip. Valid because this
        server never negotiates compression and never fragments, and control frames may
        interleave between whole data frames.
        """
        if (
            self.close_sent
            or self.disconnected
            or not self.handshake_complete
            or not self.writable.is_set()
            or self.transport.is_closing()
            or self.conn.state is not State.OPEN
        ):
            return False
        size = len(payload)
        if size < 126:
            header = bytes((0x81, size))
        elif size < 65536:
            header = struct.pack("!BBH", 0x81, 126, size)
        else:
            header = struct.pack("!BBQ", 0x81, 127, size)
        self.transport.write(header + payload)
        return True


class _StarletteTransport:
    """The connection's Transport over a Starlette WebSocket."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket
        self._closed = False
        self._write_now = websocket.scope.get("extensions", {}).get(_WRITE_EXTENSION)

    async def receive(self) -> str | bytes | None:
        if self._closed:
            return None
        message = await self._ws.receive()
        if message["type"] == "websocket.disconnect":
            self._closed = True
            return None
        text = message.get("text")
        if text is not None:
            return str(text)
        data = message.get("bytes")
        return bytes(data) if data is not None else b""

    def write_now(self, data: bytes) -> bool:
        return not self._closed and self._write_now is not None and bool(self._write_now(data))

    async def send(self, data: bytes) -> None:
        if self._closed:
            raise ClientGone()
        if self.write_now(data):
            return
        try:
            await self._ws.send({"type": "websocket.send", "text": data.decode()})
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            self._closed = True
            raise ClientGone() from exc
        except Exception as exc:  # uvicorn's ClientDisconnected and friends
            self._closed = True
            raise ClientGone() from exc

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._ws.close(code, reason)
        except Exception:  # already gone
            return

    def abort(self) -> None:
        self._closed = True
        abort = self._ws.scope.get("extensions", {}).get(_ABORT_EXTENSION)
        if abort is not None:
            abort()


class _NormalizePath:
    """Collapse duplicate slashes (a deployment URL ending in "/" yields "//api/...")."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and "//" in scope.get("path", ""):
            scope = dict(scope)
            scope["path"] = _SLASHES.sub("/", scope["path"])
        await self.app(scope, receive, send)


class _Cors:
    """CORS like the Convex backend: mirror Origin, allow credentials, cache preflights a day."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        cors = [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
        ]
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in {
            k.lower() for k, _ in scope["headers"]
        }:
            requested = headers.get("access-control-request-headers", b"content-type")
            response = Response(
                status_code=204,
                headers={
                    "access-control-allow-origin": origin.decode("latin-1"),
                    "access-control-allow-credentials": "true",
                    "access-control-allow-methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
                    "access-control-allow-headers": requested.decode("latin-1"),
                    "access-control-max-age": "86400",
                    "vary": "Origin",
                },
            )
            await response(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *cors]
            await send(message)

        await self.app(scope, receive, send_with_cors)


def default_static_dir() -> Path | None:
    """The dashboard's built assets, if they ship with this installation."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "dashboard" / "static", here / "reactive" / "static"):
        if (candidate / "index.html").is_file():
            return candidate
    return None


class _SpaStatic(StaticFiles):
    """Static files with index.html as the fallback for client-side routes."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404:
                raise
            return FileResponse(Path(str(self.directory)) / "index.html")


def uvicorn_config(app: ASGIApp, host: str, port: int, limits: Limits, **extra: Any) -> Any:
    """The uvicorn settings the store needs (abortable sockets, no compression, quiet)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ws=AbortableWebSocketProtocol,
        # Our own limit answers with FatalError; the transport's is the backstop.
        ws_max_size=2 * limits.max_message_bytes,
        # Compression would cost a deflate per socket per Transition, and the direct frame
        # write (write_text_frame) relies on its absence.
        ws_per_message_deflate=False,
        log_config=None,
        access_log=False,
        lifespan="off",
        **extra,
    )


def build_app(gateway: Gateway, *, static_dir: Path | None = None) -> ASGIApp:
    """Assemble the store's ASGI app.

    Args:
        gateway: the engine and everything the front doors share.
        static_dir: a directory of built web assets to serve at ``/`` (index.html fallback).
    """

    async def sync_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await SyncConnection(gateway, _StarletteTransport(websocket)).run()

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "ts": str(gateway.engine.ts)})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type="text/plain")

    async def not_found(request: Request) -> Response:
        return Response(
            orjson.dumps({"code": "NotFound", "message": f"No route for {request.url.path}"}),
            status_code=404,
            media_type="application/json",
        )

    routes: list[BaseRoute] = [
        WebSocketRoute("/api/sync", sync_endpoint),
        WebSocketRoute("/api/{version}/sync", sync_endpoint),
        *http_routes(gateway),
        Route("/health", health),
        Route("/metrics", metrics),
        Route("/api/{rest:path}", not_found, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
    if static_dir is not None and (static_dir / "index.html").is_file():
        routes.append(Mount("/", _SpaStatic(directory=static_dir, html=True)))
    app = Starlette(routes=routes)
    return _NormalizePath(_Cors(app))
