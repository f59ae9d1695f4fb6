"""A real store (engine + SQLite + uvicorn on a free port) inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from e2e.example_functions import counter
from marketpulse.reactive import FunctionModule
from marketpulse.reactive._binding import gateway_for
from marketpulse.reactive.auth import TokenVerifier
from marketpulse.reactive.engine import Engine
from marketpulse.reactive.gateway import Gateway, OriginPolicy
from marketpulse.reactive.limits import ConnectionLimits, RunLimits
from marketpulse.reactive.persistence import open_persistence
from marketpulse.reactive.server import build_app, uvicorn_config
from marketpulse.reactive.sync.client import LightSyncClient

ADMIN_KEY = "test-admin-key-0123456789"


@dataclass
class Served:
    gateway: Gateway
    engine: Engine
    url: str

    @property
    def ws_url(self) -> str:
        return LightSyncClient.ws_url(self.url)

    async def client(self) -> LightSyncClient:
        return await LightSyncClient(self.ws_url).connect()


@contextlib.asynccontextmanager
async def serve_store(
    db_path: Path,
    limits: ConnectionLimits | None = None,
    *,
    static_dir: Path | None = None,
    modules: list[FunctionModule] | None = None,
    verifier: TokenVerifier | None = None,
    origins: OriginPolicy | None = None,
    metrics_token: str | None = None,
    run_limits: RunLimits | None = None,
) -> AsyncIterator[Served]:
    engine = await Engine.open(
        open_persistence(f"sqlite:{db_path}"),
        modules or [counter],
        limits=run_limits or RunLimits(query_time_limit=0.3, max_result_bytes=2_000_000),
    )
    gateway = gateway_for(engine, ADMIN_KEY, limits, verifier=verifier, origins=origins)
    app = build_app(gateway, static_dir=static_dir, metrics_token=metrics_token)
    config = uvicorn_config(app, "127.0.0.1", 0, gateway)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server._serve())  # no signal handlers inside a test
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Served(gateway, engine, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 10)
        await engine.close()
        if verifier is not None:
            await verifier.aclose()
