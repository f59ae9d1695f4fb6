"""A whole local system as subprocesses on free ports, for tests and benchmarks.

Temporal dev server (in memory), ``marketpulse serve`` (SQLite in ``root``), ``marketpulse
simulate`` (controlled over ``/_sim``) and ``marketpulse worker``, each a
:class:`~marketpulse.pipeline._procs.ManagedProcess` logging into ``root``.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client, WorkflowHandle

from marketpulse.pipeline._binaries import temporal_cli
from marketpulse.pipeline._connect import connect_temporal
from marketpulse.pipeline._procs import ManagedProcess, free_port, wait_for_port
from marketpulse.pipeline.config import TASK_QUEUE, StreamConfig
from marketpulse.pipeline.workflow import KalshiStreamWorkflow

__all__ = ["Book", "LocalSystem", "Streaming", "canonical_book"]

Book = tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]
"""(bids, asks), best first, rounded: comparable between the store and the simulator."""

SIM_KEY_FILE = "kalshi-sim-private-key.pem"
SIM_KEY_ID_FILE = "kalshi-sim-key-id"


def _round(levels: Sequence[Sequence[float]]) -> tuple[tuple[float, float], ...]:
    return tuple((round(float(p), 6), round(float(s), 6)) for p, s in levels)


def canonical_book(result: dict[str, Any] | None) -> Book | None:
    """A ``getOrderbook`` result as a comparable :data:`Book` (None stays None)."""
    if result is None:
        return None
    return _round(result["bids"]), _round(result["asks"])


@dataclass
class Streaming:
    """A running stream of :meth:`LocalSystem.start_streaming`."""

    client: Client
    handle: WorkflowHandle[Any, Any]
    markets: list[str]
    metrics_url: str


class LocalSystem:
    """Start and stop the system's processes.

    Args:
        root: Directory for logs, SQLite and simulator keys.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.admin_key = "local_" + secrets.token_urlsafe(24)
        self.procs: dict[str, ManagedProcess] = {}
        self.temporal = ""
        self.store_url = ""
        self.sim_url = ""
        self.sim_env: dict[str, str] = {}
        self.http = httpx.Client(timeout=10)

    # -- processes ----------------------------------------------------------------------------

    def _start(
        self, name: str, argv: list[str], port: int, env: dict[str, str] | None = None
    ) -> None:
        proc = ManagedProcess(name, argv, log_path=self.root / f"{name}.log", env=env).start()
        self.procs[name] = proc
        wait_for_port(port, 90, proc)

    def start_temporal(self) -> str:
        """Temporal dev server, in memory, no UI; returns ``host:port``."""
        port = free_port()
        argv = [temporal_cli(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port)]
        for flag in ("--ui-port", "--http-port", "--metrics-port"):
            argv += [flag, str(free_port())]
        self._start("temporal", [*argv, "--headless", "--log-level", "error"], port)
        self.temporal = f"127.0.0.1:{port}"
        return self.temporal

    def start_store(self) -> str:
        """``marketpulse serve`` on SQLite; returns its URL."""
        port = free_port()
        db = f"sqlite:{self.root / 'store.sqlite'}"
        argv = [sys.executable, "-m", "marketpulse", "serve", "--port", str(port), "--db", db]
        self._start("store", argv, port, {"MARKETPULSE_ADMIN_KEY": self.admin_key})
        self.store_url = f"http://127.0.0.1:{port}"
        return self.store_url

    def start_simulator(self, *, markets: int, rate: float, seed: int = 7) -> str:
        """``marketpulse simulate``; returns its base URL and fills :attr:`sim_env`."""
        port = free_port()
        key_dir = self.root / "sim-keys"
        argv = [sys.executable, "-m", "marketpulse", "simulate", "--port", str(port)]
        argv += ["--markets", str(markets), "--rate", str(rate), "--seed", str(seed)]
        self._start("simulator", [*argv, "--key-dir", str(key_dir)], port)
        self.sim_url = f"http://127.0.0.1:{port}"
        self.sim_env = {
            "KALSHI_API_KEY_ID": (key_dir / SIM_KEY_ID_FILE).read_text().strip(),
            "KALSHI_PRIVATE_KEY_PATH": str(key_dir / SIM_KEY_FILE),
            "MARKETPULSE_SIM_URL": self.sim_url,
        }
        return self.sim_url

    def start_worker(self, *extra: str) -> ManagedProcess:
        """``marketpulse worker`` for the simulator (not waited for: it has no port)."""
        argv = [sys.executable, "-m", "marketpulse", "worker", "--temporal", self.temporal]
        argv += ["--store", self.store_url, "--exchange", "sim", *extra]
        proc = ManagedProcess(
            "worker",
            argv,
            log_path=self.root / "worker.log",
            env={"MARKETPULSE_ADMIN_KEY": self.admin_key, **self.sim_env},
        ).start()
        self.procs["worker"] = proc
        return proc

    async def start_streaming(
        self, *, markets: int, workflow_id: str, ready: int | None = None, rate: float = 1000.0
    ) -> Streaming:
        """The whole pipeline: Temporal, store, simulator, a worker exposing its metrics, and
        the stream workflow over every simulated market; returns once the first ``ready``
        markets (default: all) have a book in the store."""
        self.start_temporal()
        self.start_store()
        self.start_simulator(markets=markets, rate=rate)
        metrics_port = free_port()
        self.start_worker("--metrics-port", str(metrics_port))
        wait_for_port(metrics_port, 60, self.procs["worker"])
        tickers = self.sim_markets()
        client = await self.client()
        handle = await client.start_workflow(
            KalshiStreamWorkflow.run,
            StreamConfig(markets=tickers, exchange="sim", reconnectDelay=0.5),
            id=workflow_id,
            task_queue=TASK_QUEUE,
        )
        watched = tickers[:ready] if ready is not None else tickers
        deadline = time.monotonic() + 60
        while not all(await asyncio.to_thread(lambda: [self.store_book(t) for t in watched])):
            if time.monotonic() > deadline:
                raise TimeoutError("the store did not get the simulator's books within 60 s")
            await asyncio.sleep(0.2)
        return Streaming(client, handle, tickers, f"http://127.0.0.1:{metrics_port}/metrics")

    def stop(self) -> None:
        """Stop everything, the worker first and Temporal last."""
        for name in ("worker", "simulator", "store", "temporal"):
            if name in self.procs:
                self.procs[name].stop(10)
        self.http.close()

    # -- talking to it ------------------------------------------------------------------------

    async def client(self) -> Client:
        """A Temporal client (retries while the frontend finishes starting)."""
        return await connect_temporal(
            self.temporal, timeout=30.0, visibility=True, server=self.procs.get("temporal")
        )

    def query(self, path: str, args: dict[str, Any]) -> Any:
        """Run a store query over HTTP; returns its value."""
        resp = self.http.post(
            f"{self.store_url}/api/query", json={"path": path, "args": args, "format": "json"}
        )
        body = resp.json()
        if body.get("status") != "success":
            raise RuntimeError(f"{path}: {body}")
        return body["value"]

    def store_book(self, ticker: str) -> Book | None:
        """``getOrderbook(ticker, depth=10)`` as a :data:`Book`."""
        return canonical_book(
            self.query("marketData:getOrderbook", {"ticker": ticker, "depth": 10})
        )

    def sim(self, action: str, **kw: Any) -> Any:
        """``POST /_sim/control``."""
        resp = self.http.post(f"{self.sim_url}/_sim/control", json={"action": action, **kw})
        resp.raise_for_status()
        return resp.json()

    def sim_markets(self) -> list[str]:
        """Every simulated market's ticker."""
        return [str(t) for t in self.http.get(f"{self.sim_url}/_sim/markets").json()["markets"]]

    def sim_stats(self) -> dict[str, Any]:
        """``GET /_sim/stats``."""
        stats: dict[str, Any] = self.http.get(f"{self.sim_url}/_sim/stats").json()
        return stats

    def sim_book(self, ticker: str) -> Book:
        """The simulator's exact book as YES bids/asks, top 10 (asks = 1 - NO bids)."""
        levels = self.http.get(f"{self.sim_url}/_sim/book/{ticker}").json()
        yes = [(Decimal(p), Decimal(s)) for p, s in levels["yes"]]
        no = [(Decimal(p), Decimal(s)) for p, s in levels["no"]]
        bids = [(float(p), float(s)) for p, s in reversed(yes)][:10]
        asks = [(float(1 - p), float(s)) for p, s in reversed(no)][:10]
        return _round(bids), _round(asks)

    def converged(self, tickers: Sequence[str]) -> bool:
        """Every ticker's store book equals the simulator's."""
        return all(self.store_book(t) == self.sim_book(t) for t in tickers)
