"""Server assembly: the ASGI app (HTTP API, CORS, health, metrics, web assets) and uvicorn's
settings, whose WebSocket protocol serves the sync endpoint directly (sync/websocket.py)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

import orjson
import structlog
from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from marketpulse.reactive.gateway import Gateway
from marketpulse.reactive.http import http_routes
from marketpulse.reactive.persistence import HealthCheck
from marketpulse.reactive.sync.websocket import SyncSocket

__all__ = ["build_app", "uvicorn_config"]

log = structlog.get_logger("marketpulse.server")

_SLASHES = re.compile(r"/{2,}")


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


class _SpaStatic(StaticFiles):
    """Static files with index.html as the fallback for client-side routes."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404:
                raise
            return FileResponse(Path(str(self.directory)) / "index.html")


def uvicorn_config(app: ASGIApp, host: str, port: int, gateway: Gateway, **extra: Any) -> Any:
    """The uvicorn settings the store needs.

    WebSocket upgrades go to :class:`SyncSocket`, which serves ``/api/sync`` and
    ``/api/{version}/sync`` itself (no ASGI per socket) and hands any other path to uvicorn's
    own WebSocket protocol and ``app``.

    Args:
        app: the ASGI app from :func:`build_app` (HTTP, and WebSocket paths other than sync).
        host: interface to bind.
        port: port to bind (0: any free port).
        gateway: the same gateway ``app`` was built with.
        **extra: more ``uvicorn.Config`` settings.
    """
    import uvicorn

    limits = gateway.limits
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        # uvicorn builds this with (config=, server_state=, app_state=) on every upgrade.
        ws=cast(Any, partial(SyncSocket, gateway)),
        # For the ASGI hand-off of other paths; SyncSocket applies the same limit to sync.
        ws_max_size=limits.max_frame_bytes,
        ws_per_message_deflate=False,
        log_config=None,
        access_log=False,
        lifespan="off",
        **extra,
    )


def build_app(
    gateway: Gateway,
    *,
    static_dir: Path | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> ASGIApp:
    """Assemble the store's ASGI app.

    Args:
        gateway: the engine and everything the front doors share.
        static_dir: a directory of built web assets to serve at ``/`` (index.html fallback).
        extra_routes: more routes, matched before the web assets (e.g. the dev sign-in).
    """

    # The engine contract (EngineAPI) does not expose its store; a real Engine does.
    persistence = getattr(gateway.engine, "persistence", None)
    check = persistence if isinstance(persistence, HealthCheck) else None

    async def health(request: Request) -> Response:
        problem = check.problem if check is not None else None
        if problem is not None:
            body = {"status": "error", "reason": problem, "ts": str(gateway.engine.ts)}
            return JSONResponse(body, status_code=503)
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
        *http_routes(gateway),
        Route("/health", health),
        Route("/metrics", metrics),
        Route("/api/{rest:path}", not_found, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        *extra_routes,
    ]
    if static_dir is not None and (static_dir / "index.html").is_file():
        routes.append(Mount("/", _SpaStatic(directory=static_dir, html=True)))
    app = Starlette(routes=routes)
    return _NormalizePath(_Cors(app))
