"""Fixtures: a real simulator on a free port and a signed raw ``websockets`` client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from marketpulse.kalshi import KalshiCredentials
from marketpulse.simulator import Simulator, SimulatorConfig

WS_PATH = "/trade-api/ws/v2"


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One generated key pair for the whole run: RSA generation is the slow part of start-up.
    return tmp_path_factory.mktemp("sim-keys")


def make_config(key_dir: Path, **kw: Any) -> SimulatorConfig:
    base: dict[str, Any] = dict(
        port=0, markets=12, rate=2000.0, seed=7, key_dir=str(key_dir), epoch_ms=1_795_000_000_000
    )
    base.update(kw)
    return SimulatorConfig(**base)


@pytest.fixture
async def sim(key_dir: Path) -> AsyncIterator[Simulator]:
    s = Simulator(make_config(key_dir))
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def creds(sim: Simulator) -> KalshiCredentials:
    assert sim.key_id and sim.private_key_path
    return KalshiCredentials.from_file(sim.key_id, sim.private_key_path)


async def connect(sim: Simulator, **kw: Any) -> ClientConnection:
    headers = creds(sim).headers("GET", WS_PATH)
    return await websockets.connect(sim.ws_url, additional_headers=headers, **kw)


class Client:
    """A raw client that remembers every frame it got."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []  # received, not yet taken by until()
        self.next_id = 1

    async def send(self, cmd: str, params: dict[str, Any] | None = None, **extra: Any) -> int:
        cmd_id = self.next_id
        self.next_id += 1
        body: dict[str, Any] = {"id": cmd_id, "cmd": cmd, **extra}
        if params is not None:
            body["params"] = params
        await self.ws.send(json.dumps(body))
        return cmd_id

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame = json.loads(raw)
        self.frames.append(frame)
        return frame

    async def until(self, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The first frame (earlier unclaimed ones included) that matches ``pred``."""
        for k, f in enumerate(self.pending):
            if pred(f):
                del self.pending[k]
                return f
        async with asyncio.timeout(timeout):
            while True:
                f = await self.recv(timeout)
                if pred(f):
                    return f
                self.pending.append(f)

    async def response(
        self, cmd_id: int, types: tuple[str, ...] = ("ok", "error", "subscribed", "unsubscribed")
    ) -> dict[str, Any]:
        return await self.until(lambda f: f.get("id") == cmd_id and f["type"] in types)


async def subscribed(sim: Simulator, channels: tuple[str, ...] = ("orderbook_delta",)) -> Client:
    """A signed client subscribed to ``channels`` for every market of ``sim``."""
    c = Client(await connect(sim))
    params = {"channels": list(channels), "market_tickers": list(sim.markets)}
    await c.response(await c.send("subscribe", params))
    return c
