"""A whole local system as child processes on free ports.

Temporal dev server (in memory), ``marketpulse serve`` (SQLite in ``root``), ``marketpulse
simulate`` (controlled over ``/_sim``) and ``marketpulse worker``, each logging into ``root``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Self

import httpx
from temporalio.client import Client, WorkflowHandle

from marketpulse._admin_key import new_admin_key
from marketpulse._components import (
    ChildProcess,
    SimulatorProcess,
    StoreProcess,
    TemporalProcess,
    WorkerProcess,
)
from marketpulse._process import free_port
from marketpulse.marketdata.limits import MAX_RESULTS
from marketpulse.pipeline.config import TASK_QUEUE, StreamConfig
from marketpulse.pipeline.workflow import KalshiStreamWorkflow
from marketpulse.testing._client import AdminClient

__all__ = ["Book", "LocalSystem", "Streaming", "canonical_book"]

Book = tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]
"""(bids, asks), best first, rounded: comparable between the store and the simulator."""


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
    """Start, stop and inspect the whole system; a context manager that stops it on exit.

    Args:
        root: Directory for logs, SQLite and simulator keys.
        pythonpath: Folders put first on every child's ``PYTHONPATH``: another checkout's
            ``src`` runs the same system on that code (a baseline for a benchmark).
    """

    def __init__(self, root: Path, *, pythonpath: Sequence[str | Path] = ()) -> None:
        self.root = root
        self.pythonpath = [str(p) for p in pythonpath]
        self.admin_key = new_admin_key("local_")
        self.procs: dict[str, ChildProcess] = {}
        """The started parts by name: ``temporal``, ``store`` (or ``store-n1``... and
        ``balancer``), ``simulator``, ``worker``."""
        self.temporal = ""
        """The Temporal frontend's ``host:port``, once started."""
        self.store_url = ""
        self.sim_url = ""
        self.sim_env: dict[str, str] = {}
        """What points a worker at the simulator, once started."""
        self.http = httpx.Client(timeout=10)
        self._store_client: AdminClient | None = None

    @classmethod
    def attach(cls, root: Path, *, store_url: str, sim_url: str) -> LocalSystem:
        """Inspect a system started elsewhere (e.g. by ``marketpulse dev``): the store and
        simulator queries work, nothing is started or stopped."""
        system = cls(root)
        system.store_url, system.sim_url = store_url, sim_url
        system._store_client = AdminClient(store_url, timeout=10, format="json")
        return system

    # -- processes ----------------------------------------------------------------------------

    def _start(self, child: ChildProcess, name: str | None = None) -> None:
        child.pythonpath = [*self.pythonpath, *child.pythonpath]
        self.procs[name or child.name] = child
        child.start()

    def start_temporal(self, *, persistent: bool = False) -> str:
        """Temporal dev server, no UI; returns ``host:port``.

        Args:
            persistent: Keep its state in ``root/temporal.db`` (so it survives a restart of
                the same process object, see :meth:`restart`); default in memory.
        """
        temporal = TemporalProcess(
            self.root / "temporal.log",
            db_file=self.root / "temporal.db" if persistent else None,
        )
        self._start(temporal)
        self.temporal = temporal.address
        return self.temporal

    def start_store(self, *extra: str, env: Mapping[str, str] | None = None) -> str:
        """``marketpulse serve`` on SQLite, with ``extra`` flags (and ``env``, e.g. a
        ``MARKETPULSE_TEST_SLOW_DISK_S``); returns its URL."""
        store = StoreProcess(
            self.root / "store.sqlite",
            admin_key=self.admin_key,
            log_path=self.root / "store.log",
            extra=extra,
            env=env,
        )
        self._start(store)
        self.store_url = store.url
        self._store_client = AdminClient(store.url, timeout=10, format="json")
        return self.store_url

    def start_cluster(self, database: str, nodes: int = 3) -> str:
        """``nodes`` store nodes on PostgreSQL ``database`` behind HAProxy (named
        ``store-n1``...; the balancer is ``balancer``); returns the balancer's URL, which the
        worker and :meth:`query` then use."""
        from marketpulse._balancer import BalancerProcess

        ports = []
        for i in range(1, nodes + 1):
            sep = "&" if "?" in database else "?"
            node = StoreProcess(
                f"{database}{sep}node=n{i}",
                admin_key=self.admin_key,
                log_path=self.root / f"store-n{i}.log",
            )
            self._start(node, f"store-n{i}")
            ports.append((f"n{i}", node.port))
        balancer = BalancerProcess(ports, self.root / "balancer")
        self._start(balancer)
        self.store_url = balancer.url
        self._store_client = AdminClient(balancer.url, timeout=10, format="json")
        return self.store_url

    def start_simulator(self, *, markets: int, rate: float, seed: int = 7) -> str:
        """``marketpulse simulate``; returns its base URL and fills :attr:`sim_env`."""
        sim = SimulatorProcess(
            self.root / "sim-keys",
            log_path=self.root / "simulator.log",
            markets=markets,
            rate=rate,
            seed=seed,
        )
        self._start(sim)
        self.sim_url = sim.url
        self.sim_env = sim.worker_env()
        return self.sim_url

    def start_worker(self, *extra: str, metrics_port: int | None = None) -> WorkerProcess:
        """``marketpulse worker`` for the simulator; waited for only when it serves metrics."""
        worker = WorkerProcess(
            self.root / "worker.log",
            temporal=self.temporal,
            store_url=self.store_url,
            admin_key=self.admin_key,
            env=self.sim_env,
            metrics_port=metrics_port,
            extra=extra,
        )
        self._start(worker)
        return worker

    def restart(self, name: str) -> None:
        """Start a stopped or killed part again, as it was (same ports, same files)."""
        self.procs[name].start()

    async def start_streaming(
        self,
        *,
        markets: int,
        workflow_id: str,
        ready: int | None = None,
        rate: float = 1000.0,
        persistent_temporal: bool = False,
        database: str | None = None,
        nodes: int = 3,
    ) -> Streaming:
        """The whole pipeline: Temporal, store, simulator, a worker exposing its metrics, and
        the stream workflow over every simulated market; returns once the first ``ready``
        markets (default: all) have a book in the store.

        Args:
            database: A PostgreSQL URL: the store is ``nodes`` nodes on it behind the balancer
                (:meth:`start_cluster`) instead of one node on SQLite.
        """
        self.start_temporal(persistent=persistent_temporal)
        if database is None:
            self.start_store()
        else:
            self.start_cluster(database, nodes)
        self.start_simulator(markets=markets, rate=rate)
        worker = self.start_worker(metrics_port=free_port())
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
        assert worker.metrics_url is not None
        return Streaming(client, handle, tickers, worker.metrics_url)

    def stop(self) -> None:
        """Stop everything, the worker first and Temporal last."""
        for kind in ("worker", "simulator", "balancer", "store", "temporal"):
            for name, proc in self.procs.items():
                if name.split("-")[0] == kind:
                    proc.stop(10)
        self.http.close()
        if self._store_client is not None:
            self._store_client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- talking to it ------------------------------------------------------------------------

    async def client(self) -> Client:
        """A Temporal client (retries while the frontend finishes starting)."""
        temporal = self.procs["temporal"]
        assert isinstance(temporal, TemporalProcess)
        return await temporal.client(timeout=30.0)

    def query(self, path: str, args: dict[str, Any]) -> Any:
        """Run a store query over HTTP; returns its value."""
        assert self._store_client is not None, "the store was not started"
        return self._store_client.query(path, args)

    def store_book(self, ticker: str) -> Book | None:
        """``getOrderbook(ticker, depth=10)`` as a :data:`Book`."""
        return canonical_book(
            self.query("marketData:getOrderbook", {"ticker": ticker, "depth": 10})
        )

    def store_trades(self, ticker: str) -> list[dict[str, Any]]:
        """The store's newest trades of ``ticker`` (at most ``MAX_RESULTS``), newest first."""
        trades: list[dict[str, Any]] = (
            self.query("marketData:getRecentTrades", {"ticker": ticker, "limit": MAX_RESULTS}) or []
        )
        return trades

    def sim_trades(self) -> list[dict[str, Any]]:
        """Every trade the simulator keeps (its REST ``GET /markets/trades``), newest first."""
        out: list[dict[str, Any]] = []
        cursor = ""
        for _ in range(100):
            resp = self.http.get(
                f"{self.sim_url}/trade-api/v2/markets/trades",
                params={"limit": 1000, **({"cursor": cursor} if cursor else {})},
            )
            resp.raise_for_status()
            body = resp.json()
            out.extend(body["trades"])
            cursor = body.get("cursor") or ""
            if not cursor:
                break
        return out

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
