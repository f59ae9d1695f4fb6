"""``marketpulse dev`` itself as a child process, on free ports."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from marketpulse._admin_key import admin_key_env
from marketpulse._components import HttpChildProcess, marketpulse_argv
from marketpulse._process import free_port

__all__ = ["DevProcess"]


class DevProcess(HttpChildProcess):
    """``marketpulse dev`` (Temporal, store, simulator, worker, stream); ready once it has
    written its ready file, i.e. everything is up. Its :attr:`url` is the store's (or, with
    ``store_nodes``, the balancer's), where the dashboard is served.

    Its admin key is its data directory's key file (never one from this environment).

    Args:
        data_dir: Its state directory (Temporal db, store SQLite, key, logs).
        log_path: Its console output (default: ``<data_dir>.dev.log`` beside it).
        port: The store's (and dashboard's) port; the other ports likewise default to free ones.
        temporal_port: Temporal's frontend port.
        ui_port: Temporal's web UI port.
        simulator_port: The simulator's port.
        sim_markets: How many markets the simulator lists (all are streamed).
        sim_rate: The simulator's messages per second.
        seed: The simulator's seed (default: ``dev``'s own).
        env: More environment for ``dev`` and the children it starts (e.g.
            ``MARKETPULSE_FUNCTIONS``).
        pythonpath: Directories put first on its ``PYTHONPATH`` (and its children's).
        db: The store's database URL (default: SQLite in ``data_dir``).
        store_nodes: Store nodes on ``db`` (PostgreSQL) behind HAProxy on ``port``; 0: one.
    """

    name = "marketpulse dev"
    start_timeout = 120.0
    stop_timeout = 60.0
    waits_for = "up (no ready file)"

    def __init__(
        self,
        data_dir: Path,
        *,
        log_path: Path | None = None,
        port: int | None = None,
        temporal_port: int | None = None,
        ui_port: int | None = None,
        simulator_port: int | None = None,
        sim_markets: int = 6,
        sim_rate: float = 100.0,
        seed: int | None = None,
        env: Mapping[str, str] | None = None,
        pythonpath: Sequence[str | os.PathLike[str]] = (),
        db: str | None = None,
        store_nodes: int = 0,
    ) -> None:
        super().__init__(
            log_path or data_dir.parent / f"{data_dir.name}.dev.log",
            env={**(env or {}), **admin_key_env("")},
            pythonpath=pythonpath,
        )
        self.data_dir = data_dir
        self.port = port or free_port()
        self.temporal_port = temporal_port or free_port()
        self.ui_port = ui_port or free_port()
        self.simulator_port = simulator_port or free_port()
        self.sim_markets = sim_markets
        self.sim_rate = sim_rate
        self.seed = seed
        self.db = db
        self.store_nodes = store_nodes
        self.ready_file = data_dir / "ready"

    def argv(self) -> list[str]:
        argv = marketpulse_argv("dev", "--data-dir", str(self.data_dir), "--port", str(self.port))
        argv += ["--temporal-port", str(self.temporal_port)]
        argv += ["--temporal-ui-port", str(self.ui_port)]
        argv += ["--simulator-port", str(self.simulator_port)]
        argv += ["--sim-markets", str(self.sim_markets), "--sim-rate", str(self.sim_rate)]
        if self.seed is not None:
            argv += ["--seed", str(self.seed)]
        if self.db is not None:
            argv += ["--db", self.db]
        if self.store_nodes:
            argv += ["--store-nodes", str(self.store_nodes)]
        return [*argv, "--ready-file", str(self.ready_file)]

    def ready(self) -> bool:
        return self.ready_file.exists()

    def ready_info(self) -> dict[str, list[str]]:
        """Its ready file's entries (``dashboard``, ``nodes``, ``pids``, ``names``...), each a
        list of its space-separated values; rewritten when a child is restarted."""
        out: dict[str, list[str]] = {}
        for line in self.ready_file.read_text().splitlines():
            key, _, value = line.partition("=")
            out[key] = value.split()
        return out

    def child_pid(self, name: str) -> int:
        """The pid of its child ``name`` (e.g. ``worker``, ``store-n2``, ``balancer``).

        Raises:
            KeyError: It has no such child.
        """
        info = self.ready_info()
        return int(dict(zip(info["names"], info["pids"], strict=True))[name])

    def start(self, timeout: float | None = None) -> Self:
        """Start everything and wait for its ready file (see :meth:`~marketpulse.testing.ChildProcess.start`)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)
        return super().start(timeout)
