"""Server assembly: the ASGI app (HTTP API, CORS, health, metrics, web assets) and uvicorn's
settings, whose WebSocket protocol serves the sync endpoint directly (sync/websocket.py)."""

from __future__ import annotations

import asyncio
import hmac
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

from marketpulse.reactive.admission import GuardedHttp
from marketpulse.reactive.gateway import Gateway, OriginPolicy
from marketpulse.reactive.http import http_routes
from marketpulse.reactive.persistence import HealthCheck, Readiness
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
    """CORS for the origins the gateway's :class:`OriginPolicy` allows; never on ``/metrics``.

    An allowed origin is echoed (with credentials only when configured); any other gets no
    CORS headers, so browsers keep its pages from reading the answers.
    """

    def __init__(self, app: ASGIApp, policy: OriginPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") == "/metrics":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        origin = headers.get("origin")
        host = headers.get("host")
        if origin is None or not self.policy.allows(
            origin.decode("latin-1"), host.decode("latin-1") if host else None
        ):
            await self.app(scope, receive, send)
            return
        credentials = self.policy.credentials and "*" not in self.policy.allowed
        cors = [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
        if credentials:
            cors.append((b"access-control-allow-credentials", b"true"))
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            requested = headers.get("access-control-request-headers", b"content-type")
            preflight = {k.decode(): v.decode("latin-1") for k, v in cors}
            preflight.update(
                {
                    "access-control-allow-methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
                    "access-control-allow-headers": requested.decode("latin-1"),
                    "access-control-max-age": "86400",
                }
            )
            await Response(status_code=204, headers=preflight)(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *cors]
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _refusal(status: int, code: str, message: str) -> Response:
    # connection: close makes uvicorn drop the connection once answered, unread body and all.
    return Response(
        orjson.dumps({"code": code, "message": message}),
        status_code=status,
        media_type="application/json",
        headers={"connection": "close"},
    )


class _BoundedBody:
    """Reads each request body in full before the app runs, within ``max_body_bytes`` (413,
    checked against Content-Length first, then counted as chunks arrive) and
    ``body_timeout_s`` (408). Starlette itself would buffer any body, however large.
    """

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gw = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.gw.limits
        limit = limits.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        too_big = _refusal(413, "RequestTooLarge", f"request body over the limit of {limit} bytes")
        if limit > 0 and declared is not None and declared.isdigit() and int(declared) > limit:
            self.gw.metrics.refused.labels("body_bytes").inc()
            await too_big(scope, receive, send)
            return
        body = bytearray()
        try:
            async with asyncio.timeout(limits.body_timeout_s or None):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    if 0 < limit < len(body):
                        self.gw.metrics.refused.labels("body_bytes").inc()
                        await too_big(scope, receive, send)
                        return
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            self.gw.metrics.refused.labels("timeout").inc()
            timeout = limits.body_timeout_s
            await _refusal(408, "RequestTimeout", f"body not received within {timeout:g} s")(
                scope, receive, send
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        big = len(body) >= 1024 * 1024
        await self.app(scope, replay, send)
        if big:
            del body
            self.gw.memory.soon()


class _SpaStatic(StaticFiles):
    """Static files with index.html as the fallback for client-side routes.

    Not for a missing build asset (under ``assets/``, where Vite puts them): a page built
    before a deploy asks for chunks that are gone, and a 200 of HTML there fails as a
    script with a MIME-type error instead of the 404 the loader can act on."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404 or path.replace("\\", "/").startswith("assets/"):
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
        # Admission, head timeout and head size in front of uvicorn's httptools parser.
        http=cast(Any, partial(GuardedHttp, gateway.admission, limits)),
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
    metrics: bool = True,
    metrics_token: str | None = None,
) -> ASGIApp:
    """Assemble the store's ASGI app.

    Args:
        gateway: the engine and everything the front doors share.
        static_dir: a directory of built web assets to serve at ``/`` (index.html fallback).
        extra_routes: more routes, matched before the web assets (e.g. the dev sign-in).
        metrics: whether ``/metrics`` is served here (False when it has its own address).
        metrics_token: when set, ``/metrics`` answers only ``Authorization: Bearer <token>``.
    """
    expected = f"Bearer {metrics_token}".encode() if metrics_token else None

    # The engine contract (EngineAPI) does not expose its store; a real Engine does.
    persistence = getattr(gateway.engine, "persistence", None)
    check = persistence if isinstance(persistence, HealthCheck) else None
    readiness = getattr(gateway.engine, "readiness", None)

    async def health(request: Request) -> Response:
        """Readiness (503 with the reason when this node should get no new clients);
        ``/health/live`` only says the process serves."""
        ts = str(gateway.engine.ts)
        if request.url.path.endswith("/live") or "live" in request.query_params:
            return JSONResponse({"ok": True, "status": "ok", "ts": ts})
        ready: Readiness | None = readiness() if readiness is not None else None
        if ready is not None:
            body: dict[str, Any] = {
                "ok": ready.ok,
                "status": "ok" if ready.ok else "error",
                "database": ready.database,
                "following": ready.following,
                "lag_ms": round(ready.lag_s * 1000, 1),
                "max_lag_ms": round(ready.max_lag_s * 1000, 1),
                "ts": ts,
            }
            if ready.reason is not None:
                body["reason"] = ready.reason
            return JSONResponse(body, status_code=200 if ready.ok else 503)
        problem = check.problem if check is not None else None
        if problem is not None:
            body = {"ok": False, "status": "error", "reason": problem, "ts": ts}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"ok": True, "status": "ok", "ts": ts})

    async def metrics_page(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, expected):
                return Response(
                    orjson.dumps({"code": "Unauthenticated", "message": "metrics need a token"}),
                    status_code=401,
                    media_type="application/json",
                    headers={"www-authenticate": "Bearer"},
                )
        # On a worker thread: rendering is 1-3 ms of Python (every histogram bucket formatted),
        # which on the loop's thread would delay every socket's turn by as much. The metrics'
        # values take their own locks and the collectors read plain numbers. Even there it
        # holds the GIL the loop needs: a scraper that wants a few series names them, as
        # prometheus_client's own handlers allow (``?name[]=<sample name>``, repeated), and
        # only the collectors of those names run.
        names = request.query_params.getlist("name[]")
        registry = gateway.metrics.registry
        source = registry.restricted_registry(names) if names else registry
        body = await asyncio.to_thread(generate_latest, source)  # type: ignore[arg-type]
        return Response(body, media_type="text/plain")

    async def not_found(request: Request) -> Response:
        return Response(
            orjson.dumps({"code": "NotFound", "message": f"No route for {request.url.path}"}),
            status_code=404,
            media_type="application/json",
        )

    routes: list[BaseRoute] = [
        *http_routes(gateway),
        Route("/health", health),
        Route("/health/live", health),
        *([Route("/metrics", metrics_page)] if metrics else []),
        Route("/api/{rest:path}", not_found, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        *extra_routes,
    ]
    if static_dir is not None and (static_dir / "index.html").is_file():
        routes.append(Mount("/", _SpaStatic(directory=static_dir, html=True)))
    app = Starlette(routes=routes)
    return _NormalizePath(_Cors(_BoundedBody(app, gateway), gateway.origins))
