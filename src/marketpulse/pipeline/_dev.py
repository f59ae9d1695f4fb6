"""``marketpulse dev``: the whole system on one machine, on embedded defaults.

Starts, in order: the Temporal dev server (state and web UI), the store (SQLite; or, with
``--store-nodes N --db postgresql://...``, N store nodes on that database behind HAProxy, see
:mod:`marketpulse._balancer`), the exchange simulator or a real Kalshi exchange, the worker
(writing through the balancer when there is one), and the stream workflow for the exchange's
markets; each child as :mod:`marketpulse._components` describes it (the test harness,
:mod:`marketpulse.testing`, starts the same ones). Then it supervises them as a production
deployment's process manager would: a child that dies is started again (the store on the same
file and port, Temporal on its same database) after a backoff of 1, 2, 4 ... up to 15 s, so
Temporal's retries and the stream's leases get their chance to heal the system; dev gives up
only when a child died more than ``MAX_RESTARTS`` times within ``RESTART_WINDOW_S``.
Ctrl-C or SIGTERM stops them in reverse
order: the worker drains first (while the store and Temporal are still up to take its last
writes), then the simulator, the balancer, the store nodes, and Temporal last. Every child runs in its own process group with a parent-death signal,
so none is left behind.

The data directory holds everything that must survive a restart: the Temporal database, the
store's SQLite file, the admin key and the dev identity provider's key (both mode 0600; never
written to the store), and the logs. Users sign in through the store's development issuer
(``/auth/dev/sign-in``: choose a name), unless a real provider is configured with
``--auth-config`` or ``MARKETPULSE_AUTH_CONFIG``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from marketpulse._admin_key import load_admin_key
from marketpulse._aio import cancel_and_wait
from marketpulse._balancer import BalancerProcess, haproxy_binary
from marketpulse._components import (
    ChildProcess,
    SimulatorProcess,
    StoreProcess,
    TemporalProcess,
    WorkerProcess,
)
from marketpulse._process import free_port
from marketpulse.pipeline.config import TASK_QUEUE, MarketsChange, StreamConfig, WorkflowStatus
from marketpulse.pipeline.workflow import KalshiStreamWorkflow

__all__ = ["MAX_RESTARTS", "RESTART_WINDOW_S", "DevOptions", "run_dev"]

MAX_RESTARTS = 5
"""Restarts of one child within ``RESTART_WINDOW_S`` after which dev stops everything."""
RESTART_WINDOW_S = 120.0
_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0)

DEV_AUTH_KEY_FILE = "dev_auth_key.pem"
"""The dev identity provider's signing key in the data directory (mode 0600)."""
LOCK_FILE = "dev.lock"
"""Held (``flock``) by the ``dev`` using the data directory; holds its pid."""


@dataclass
class DevOptions:
    """Options of ``marketpulse dev``."""

    data_dir: Path = field(default_factory=lambda: Path(".marketpulse"))
    port: int = 3210
    temporal_port: int = 7233
    temporal_ui_port: int | None = None
    simulator_port: int = 8765
    exchange: str = "sim"
    markets: list[str] = field(default_factory=list)
    sim_markets: int = 20
    sim_rate: float = 50.0
    seed: int = 1
    metrics_port: int | None = None
    alert_webhook: str | None = None
    workflow_id: str = ""
    ready_file: Path | None = None
    auth_config: str | None = None
    db: str | None = None
    """The store's database URL (default: SQLite in the data directory)."""
    store_nodes: int = 0
    """Store nodes behind a balancer on ``db`` (PostgreSQL); 0: one node, no balancer."""

    def check(self) -> None:
        """Refuse options that cannot work together, saying why.

        Raises:
            ValueError: Store nodes without a PostgreSQL database, or HAProxy missing.
        """
        if self.store_nodes < 0:
            raise ValueError("--store-nodes must be 1 or more")
        if self.store_nodes and not (self.db or "").startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "--store-nodes needs --db postgresql://...: the nodes share one PostgreSQL "
                "database (SQLite is one machine's, one node's)"
            )
        if self.store_nodes:
            haproxy_binary()  # its error says how to install it


# The order children stop in (the worker drains into a live store); by label prefix.
_STOP_ORDER = ("worker", "simulator", "balancer", "store", "temporal")


class _Dev:
    def __init__(self, opts: DevOptions, console: Console) -> None:
        self.opts = opts
        self.console = console
        self.data = opts.data_dir.resolve()
        self.logs = self.data / "logs"
        self.procs: dict[str, ChildProcess] = {}
        """Each child by its label (``store`` or ``store-n1``..., ``balancer``...)."""
        self.sim_env: dict[str, str] = {}
        self.sim_url = ""
        self.client: Client | None = None
        self.workflow_id = opts.workflow_id or f"kalshi-stream-{opts.exchange}"
        self.ui_port = opts.temporal_ui_port or opts.temporal_port + 1000
        self.metrics_port = opts.metrics_port or free_port()
        self.sign_in = ""
        self.restarts = 0

    # -- start --------------------------------------------------------------------------------

    async def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data, 0o700)
        self._lock = _lock_data_dir(self.data)
        self.admin_key = load_admin_key(self.data)
        steps = [
            ("Temporal dev server", self._start_temporal),
            (self._store_label(), self._start_store),
            ("exchange", self._start_exchange),
            ("worker", self._start_worker),
            ("stream workflow", self._start_workflow),
        ]
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        ) as progress:
            for label, step in steps:
                task = progress.add_task(f"starting {label}", total=1)
                detail = await step()
                progress.update(
                    task, completed=1, description=f"[green]✓[/green] {label}: {detail}"
                )

    def _store_label(self) -> str:
        o = self.opts
        if o.store_nodes:
            return f"{o.store_nodes} store nodes (PostgreSQL) behind HAProxy"
        return "store (PostgreSQL)" if o.db else "store (SQLite)"

    async def _launch(self, child: ChildProcess, label: str | None = None) -> None:
        self.procs[label or child.name] = child
        await asyncio.to_thread(child.start)

    async def _start_temporal(self) -> str:
        temporal = TemporalProcess(
            self.logs / "temporal.log",
            port=self.opts.temporal_port,
            ui_port=self.ui_port,
            db_file=self.data / "temporal.db",
            log_level="warn",
        )
        await self._launch(temporal)
        self.client = await temporal.client()
        return temporal.address

    async def _start_store(self) -> str:
        # Users sign in through the store's dev issuer unless a real provider is configured.
        dev_auth = not (self.opts.auth_config or os.environ.get("MARKETPULSE_AUTH_CONFIG"))
        extra = ["--auth-config", self.opts.auth_config] if self.opts.auth_config else []
        if dev_auth:
            extra = ["--dev-auth-key", str(self.data / DEV_AUTH_KEY_FILE)]
        o = self.opts
        database = o.db or f"sqlite:{self.data / 'store.sqlite'}"
        if not o.store_nodes:
            store = StoreProcess(
                database,
                admin_key=self.admin_key,
                port=o.port,
                log_path=self.logs / "store.log",
                extra=extra,
            )
            await self._launch(store)
            self.sign_in = f"{store.url}/auth/dev/sign-in" if dev_auth else "your auth provider"
            return store.url
        if dev_auth:  # one issuer for all the nodes: the balancer's address, where users are
            extra += ["--dev-auth-url", f"http://127.0.0.1:{o.port}"]
        nodes: list[tuple[str, int]] = []
        for i in range(1, o.store_nodes + 1):
            name = f"n{i}"
            node = StoreProcess(
                _with_node(database, name),
                admin_key=self.admin_key,
                port=free_port(),  # kept across its restarts
                log_path=self.logs / f"store-{name}.log",
                extra=extra,
            )
            await self._launch(node, f"store-{name}")
            nodes.append((name, node.port))
        balancer = BalancerProcess(nodes, self.data / "balancer", port=o.port)
        await self._launch(balancer)
        self.sign_in = f"{balancer.url}/auth/dev/sign-in" if dev_auth else "your auth provider"
        ports = ", ".join(f"{name} :{port}" for name, port in nodes)
        return f"balancer {balancer.url} -> {ports}"

    async def _start_exchange(self) -> str:
        o = self.opts
        if o.exchange != "sim":
            self.sim_env = {}
            return f"Kalshi {o.exchange} (credentials from KALSHI_* in this environment)"
        sim = SimulatorProcess(
            self.data / "simulator",
            log_path=self.logs / "simulator.log",
            port=o.simulator_port,
            markets=o.sim_markets,
            rate=o.sim_rate,
            seed=o.seed,
        )
        await self._launch(sim)
        self.sim_url = sim.url
        self.sim_env = sim.worker_env()
        return f"simulator {self.sim_url} ({o.sim_markets} markets, {o.sim_rate:g} msg/s)"

    async def _start_worker(self) -> str:
        o = self.opts
        worker = WorkerProcess(
            self.logs / "worker.log",
            temporal=f"127.0.0.1:{o.temporal_port}",
            store_url=f"http://127.0.0.1:{o.port}",
            admin_key=self.admin_key,
            exchange=o.exchange,
            env=self.sim_env,
            metrics_port=self.metrics_port,
            alert_webhook=o.alert_webhook,
        )
        await self._launch(worker)
        return f"pid {worker.pid}, metrics {worker.metrics_url}"

    async def _markets(self) -> list[str]:
        if self.opts.markets:
            return list(self.opts.markets)
        if self.sim_env:
            async with httpx.AsyncClient(timeout=10) as http:
                resp = await http.get(f"{self.sim_url}/_sim/markets")
                resp.raise_for_status()
                return [str(t) for t in resp.json()["markets"]]
        from marketpulse.kalshi import KalshiCredentials, KalshiRestClient
        from marketpulse.pipeline._exchange import resolve_exchange

        creds = KalshiCredentials.from_env()
        async with KalshiRestClient(resolve_exchange(self.opts.exchange).rest_url, creds) as rest:
            out: list[str] = []
            async for m in rest.iter_markets(status="open", max_pages=1, limit=50):
                out.append(m.ticker)
            return out

    async def _start_workflow(self) -> str:
        assert self.client is not None
        handle = self.client.get_workflow_handle_for(KalshiStreamWorkflow.run, self.workflow_id)
        running = False
        with contextlib.suppress(RPCError):
            desc = await handle.describe()
            running = desc.status == WorkflowExecutionStatus.RUNNING
        if running:
            # Kept from the last run: reconnect now (fresh credentials) rather than after the
            # old attempt's heartbeat timeout.
            await handle.signal(KalshiStreamWorkflow.restart_stream)
            verb = "resumed"
            if self.sim_env:
                # Simulated tickers carry dates: if none of the kept markets exists any more,
                # follow the simulator's current ones.
                kept = (await handle.query(KalshiStreamWorkflow.status)).markets
                available = await self._markets()
                if kept and not set(kept) & set(available):
                    await handle.execute_update(
                        KalshiStreamWorkflow.update_markets,
                        MarketsChange(add=available, remove=kept),
                    )
                    verb = "resumed (markets renewed)"
        else:
            markets = await self._markets()
            await self.client.start_workflow(
                KalshiStreamWorkflow.run,
                StreamConfig(markets=markets, exchange=self.opts.exchange),
                id=self.workflow_id,
                task_queue=TASK_QUEUE,
            )
            verb = "started"
        status: WorkflowStatus | None = None
        end = time.monotonic() + 30
        while time.monotonic() < end:
            with contextlib.suppress(RPCError):
                status = await handle.query(KalshiStreamWorkflow.status)
                if status.state in ("streaming", "idle"):
                    break
            await asyncio.sleep(0.3)
        n = len(status.markets) if status else 0
        return f"{verb} {self.workflow_id} ({n} markets)"

    # -- run / stop ---------------------------------------------------------------------------

    def banner(self) -> None:
        o = self.opts
        nodes = self._nodes()
        cluster = (
            f"[bold]Balancer[/bold]     http://127.0.0.1:{o.port}/ (HAProxy) -> "
            + ", ".join(nodes)
            + "\n"
            if nodes
            else ""
        )
        self.console.print(
            Panel.fit(
                f"[bold]Dashboard[/bold]    http://127.0.0.1:{o.port}/\n"
                f"{cluster}"
                f"[bold]Temporal UI[/bold]  http://127.0.0.1:{self.ui_port}/namespaces/default/workflows\n"
                f"[bold]Metrics[/bold]      http://127.0.0.1:{self.metrics_port}/metrics\n"
                f"[bold]Sign in[/bold]      {self.sign_in}\n"
                f"[bold]Data[/bold]         {self.data}  (logs in {self.logs})\n"
                "Ctrl-C stops everything.",
                title="marketpulse dev",
            )
        )
        self._write_ready_file()

    def _nodes(self) -> list[str]:
        return [
            p.url
            for label, p in self.procs.items()
            if label.startswith("store-") and isinstance(p, StoreProcess)
        ]

    def _write_ready_file(self) -> None:
        o = self.opts
        if o.ready_file is not None:
            # Written whole then renamed: a reader never sees half a file.
            tmp = o.ready_file.with_name(o.ready_file.name + ".tmp")
            tmp.write_text(
                f"dashboard=http://127.0.0.1:{o.port}/\n"
                f"temporal_ui=http://127.0.0.1:{self.ui_port}/\n"
                f"sign_in={self.sign_in}\n"
                f"nodes={' '.join(self._nodes())}\n"
                f"pids={' '.join(str(p.pid) for p in self.procs.values())}\n"
                f"names={' '.join(self.procs)}\n"
                f"restarts={self.restarts}\n"
            )
            tmp.replace(o.ready_file)

    async def watch(self, stop: asyncio.Event) -> str:
        """Supervise until a stop signal: restart a child that died, with backoff; stop
        everything only when one keeps dying (returns why)."""
        deaths: dict[str, list[float]] = {}
        while not stop.is_set():
            for label, p in list(self.procs.items()):
                code = p.poll()
                if code is None:
                    continue
                now = time.monotonic()
                recent = [t for t in deaths.get(label, []) if now - t < RESTART_WINDOW_S]
                recent.append(now)
                deaths[label] = recent
                if len(recent) > MAX_RESTARTS:
                    return (
                        f"{label} keeps failing: exited {len(recent)} times in "
                        f"{RESTART_WINDOW_S:g}s, last with {code} (see {p.log_path})"
                    )
                delay = _BACKOFF_S[min(len(recent), len(_BACKOFF_S)) - 1]
                self.console.print(
                    f"[yellow]{label} exited with {code}; restarting in {delay:g}s "
                    f"(see {p.log_path})[/yellow]"
                )
                if await _sleep_unless(stop, delay):
                    return "stop requested"
                try:
                    await asyncio.to_thread(p.start)
                except Exception as exc:  # counted as another death on the next look
                    self.console.print(f"[red]{label} did not come back: {exc}[/red]")
                    continue
                self.restarts += 1
                self.console.print(f"[green]{label} restarted (pid {p.pid})[/green]")
                self._write_ready_file()
            await _sleep_unless(stop, 0.5)
        return "stop requested"

    async def stop(self) -> None:
        for kind in _STOP_ORDER:
            for label, p in self.procs.items():
                if label.split("-")[0] != kind:
                    continue
                self.console.print(
                    "stopping worker (draining)…" if kind == "worker" else f"stopping {label}…"
                )
                await asyncio.to_thread(p.stop)
        self.console.print("[green]all stopped[/green]")


def _lock_data_dir(data: Path) -> int:
    """Take the data directory for this process (released when it exits, however it ends).

    Raises:
        RuntimeError: Another ``dev`` holds it (its pid is named): two would share one store
            file and one Temporal database, and each would find the other's children answering
            on its ports.
    """
    fd = os.open(data / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RuntimeError(
            f"another marketpulse dev (pid {holder}) is running on {data}: stop it first, "
            "or give this one another --data-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _with_node(database: str, name: str) -> str:
    """``database`` with ``node=name`` among its URL options (the node's id in PostgreSQL)."""
    return f"{database}{'&' if '?' in database else '?'}node={name}"


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds``; True if ``stop`` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    return stop.is_set()


async def run_dev(opts: DevOptions) -> int:
    """Run everything until Ctrl-C/SIGTERM; returns the exit code."""
    console = Console(stderr=False, highlight=False)
    try:
        opts.check()
    except (ValueError, RuntimeError) as exc:
        console.print(f"[red]marketpulse dev: {exc}[/red]")
        return 2
    dev = _Dev(opts, console)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        start = asyncio.create_task(dev.start())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({start, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if start.done():
            start.result()
            dev.banner()
            reason = await dev.watch(stop)
            if reason != "stop requested":
                console.print(f"[red]{reason}[/red]")
                code = 1
        else:
            await cancel_and_wait(start)
        stopper.cancel()
    except Exception as exc:
        console.print(f"[red]marketpulse dev failed: {exc}[/red]")
        code = 1
    finally:
        await dev.stop()
    return code
