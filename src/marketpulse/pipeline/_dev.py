"""``marketpulse dev``: the whole system on one machine, on embedded defaults.

Starts, in order: the Temporal dev server (state and web UI), the store (SQLite), the exchange
simulator (in this process) or a real Kalshi exchange, the worker, and the stream workflow for
the exchange's markets. Ctrl-C or SIGTERM stops them in reverse order: the worker drains first
(while the store and Temporal are still up to take its last writes), then the simulator, the
store, and Temporal last. Every child runs in its own process group with a parent-death signal,
so none is left behind.

The data directory holds everything that must survive a restart: the Temporal database, the
store's SQLite file, the admin key (mode 0600; never written to the store), and the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from marketpulse._aio import cancel_and_wait
from marketpulse.pipeline._binaries import temporal_cli
from marketpulse.pipeline._connect import connect_temporal
from marketpulse.pipeline._procs import ManagedProcess, free_port, wait_for_port
from marketpulse.pipeline.config import TASK_QUEUE, MarketsChange, StreamConfig, WorkflowStatus
from marketpulse.pipeline.workflow import KalshiStreamWorkflow

__all__ = ["DevOptions", "load_admin_key", "run_dev"]

ADMIN_KEY_FILE = "admin_key"
# Where `marketpulse simulate --key-dir` keeps its generated key pair.
SIM_KEY_FILE = "kalshi-sim-private-key.pem"
SIM_KEY_ID_FILE = "kalshi-sim-key-id"


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


def load_admin_key(data_dir: Path) -> str:
    """The store's admin key: ``MARKETPULSE_ADMIN_KEY`` if set, else the data dir's key file.

    A new key is generated on first use and written with mode 0600.
    """
    env = os.environ.get("MARKETPULSE_ADMIN_KEY", "").strip()
    if env:
        return env
    path = data_dir / ADMIN_KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        if key:
            os.chmod(path, 0o600)
            return key
    key = "mp_admin_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


class _Dev:
    def __init__(self, opts: DevOptions, console: Console) -> None:
        self.opts = opts
        self.console = console
        self.data = opts.data_dir.resolve()
        self.logs = self.data / "logs"
        self.procs: list[ManagedProcess] = []
        self.sim_env: dict[str, str] = {}
        self.sim_url = ""
        self.client: Client | None = None
        self.workflow_id = opts.workflow_id or f"kalshi-stream-{opts.exchange}"
        self.ui_port = opts.temporal_ui_port or opts.temporal_port + 1000
        self.metrics_port = opts.metrics_port or free_port()

    # -- start --------------------------------------------------------------------------------

    async def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data, 0o700)
        self.admin_key = load_admin_key(self.data)
        steps = [
            ("Temporal dev server", self._start_temporal),
            ("store (SQLite)", self._start_store),
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

    async def _start_temporal(self) -> str:
        o = self.opts
        proc = ManagedProcess(
            "temporal",
            [
                temporal_cli(),
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--port",
                str(o.temporal_port),
                "--ui-port",
                str(self.ui_port),
                "--http-port",
                str(free_port()),
                "--metrics-port",
                str(free_port()),
                "--db-filename",
                str(self.data / "temporal.db"),
                "--ui-disable-news-fetch",
                "--log-level",
                "warn",
            ],
            log_path=self.logs / "temporal.log",
        ).start()
        self.procs.append(proc)
        await asyncio.to_thread(wait_for_port, o.temporal_port, 90.0, proc)
        address = f"127.0.0.1:{o.temporal_port}"
        self.client = await connect_temporal(address, visibility=True, server=proc)
        return address

    async def _start_store(self) -> str:
        o = self.opts
        proc = ManagedProcess(
            "store",
            [
                sys.executable,
                "-m",
                "marketpulse",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(o.port),
                "--db",
                f"sqlite:{self.data / 'store.sqlite'}",
            ],
            log_path=self.logs / "store.log",
            env={"MARKETPULSE_ADMIN_KEY": self.admin_key},
        ).start()
        self.procs.append(proc)
        await asyncio.to_thread(wait_for_port, o.port, 60.0, proc)
        return f"http://127.0.0.1:{o.port}"

    async def _start_exchange(self) -> str:
        o = self.opts
        if o.exchange != "sim":
            self.sim_env = {}
            return f"Kalshi {o.exchange} (credentials from KALSHI_* in this environment)"
        key_dir = self.data / "simulator"
        proc = ManagedProcess(
            "simulator",
            [
                sys.executable,
                "-m",
                "marketpulse",
                "simulate",
                "--host",
                "127.0.0.1",
                "--port",
                str(o.simulator_port),
                "--markets",
                str(o.sim_markets),
                "--rate",
                str(o.sim_rate),
                "--seed",
                str(o.seed),
                "--key-dir",
                str(key_dir),
            ],
            log_path=self.logs / "simulator.log",
        ).start()
        self.procs.append(proc)
        await asyncio.to_thread(wait_for_port, o.simulator_port, 60.0, proc)
        self.sim_url = f"http://127.0.0.1:{o.simulator_port}"
        self.sim_env = {
            "KALSHI_API_KEY_ID": (key_dir / SIM_KEY_ID_FILE).read_text().strip(),
            "KALSHI_PRIVATE_KEY_PATH": str(key_dir / SIM_KEY_FILE),
            "MARKETPULSE_SIM_URL": self.sim_url,
        }
        return f"simulator {self.sim_url} ({o.sim_markets} markets, {o.sim_rate:g} msg/s)"

    async def _start_worker(self) -> str:
        o = self.opts
        argv = [
            sys.executable,
            "-m",
            "marketpulse",
            "worker",
            "--temporal",
            f"127.0.0.1:{o.temporal_port}",
            "--store",
            f"http://127.0.0.1:{o.port}",
            "--exchange",
            o.exchange,
            "--metrics-port",
            str(self.metrics_port),
        ]
        if o.alert_webhook:
            argv += ["--alert-webhook", o.alert_webhook]
        proc = ManagedProcess(
            "worker",
            argv,
            log_path=self.logs / "worker.log",
            env={"MARKETPULSE_ADMIN_KEY": self.admin_key, **self.sim_env},
        ).start()
        self.procs.append(proc)
        await asyncio.to_thread(wait_for_port, self.metrics_port, 60.0, proc)
        return f"pid {proc.pid}, metrics http://127.0.0.1:{self.metrics_port}/metrics"

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
        self.console.print(
            Panel.fit(
                f"[bold]Dashboard[/bold]    http://127.0.0.1:{o.port}/\n"
                f"[bold]Temporal UI[/bold]  http://127.0.0.1:{self.ui_port}/namespaces/default/workflows\n"
                f"[bold]Metrics[/bold]      http://127.0.0.1:{self.metrics_port}/metrics\n"
                f"[bold]Data[/bold]         {self.data}  (logs in {self.logs})\n"
                "Ctrl-C stops everything.",
                title="marketpulse dev",
            )
        )
        if o.ready_file is not None:
            o.ready_file.write_text(
                f"dashboard=http://127.0.0.1:{o.port}/\n"
                f"temporal_ui=http://127.0.0.1:{self.ui_port}/\n"
                f"pids={' '.join(str(p.pid) for p in self.procs)}\n"
            )

    async def watch(self, stop: asyncio.Event) -> str:
        """Wait for a stop signal, or for a child to die (then stop the rest)."""
        while not stop.is_set():
            for p in self.procs:
                if p.poll() is not None:
                    return f"{p.name} exited with {p.poll()} (see {p.log_path})"
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await stop.wait()
        return "stop requested"

    async def stop(self) -> None:
        by_name = {p.name: p for p in self.procs}
        if "worker" in by_name:
            self.console.print("stopping worker (draining)…")
            await asyncio.to_thread(by_name["worker"].stop, 20.0)
        for name in ("simulator", "store", "temporal"):
            if name in by_name:
                self.console.print(f"stopping {name}…")
                await asyncio.to_thread(by_name[name].stop, 15.0)
        self.console.print("[green]all stopped[/green]")


async def run_dev(opts: DevOptions) -> int:
    """Run everything until Ctrl-C/SIGTERM; returns the exit code."""
    console = Console(stderr=False, highlight=False)
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
