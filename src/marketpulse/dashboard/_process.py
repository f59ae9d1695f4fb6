"""``marketpulse serve`` / ``marketpulse dev`` in a child process, for browser tests and bench.

Children run under pipeline's ManagedProcess: own process group and a parent-death signal, so
a killed test or bench leaves no orphan.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import httpx

from marketpulse.pipeline._procs import ManagedProcess, free_port

__all__ = ["DevProcess", "ServeProcess", "free_port"]


class _Child:
    """A ``python -m marketpulse ...`` child, started and waited for, stoppable and restartable."""

    name = "child"
    stop_timeout = 15.0

    def __init__(self, port: int, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self._env = env or {}
        self.proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """The store's URL, where the dashboard is served."""
        return f"http://127.0.0.1:{self.port}"

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> Self:
        """Start the child and wait until it is ready.

        Raises:
            RuntimeError: it exited or was not ready in time (with the end of its output).
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "marketpulse", *self._argv()]
        self.proc = ManagedProcess(self.name, argv, log_path=self.log_path, env=self._env).start()
        try:
            ready = _wait(self._ready, self.proc, timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{self.log()[-4000:]}") from None
        if ready:
            return self
        self.stop()
        raise RuntimeError(f"{self.name} not ready within {timeout}s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        """Its output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM (then SIGKILL after ``stop_timeout``) and wait for it."""
        if self.proc is not None:
            self.proc.stop(self.stop_timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait(ready: Callable[[], bool], proc: ManagedProcess, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.poll()}; see {proc.log_path}")
        if ready():
            return True
        time.sleep(0.1)
    return False


class ServeProcess(_Child):
    """A store on a fixed port and SQLite file; it can be stopped and started again.

    The admin key is passed in the child's environment only.
    """

    name = "store"

    def __init__(
        self,
        db_path: Path,
        admin_key: str,
        *,
        port: int | None = None,
        functions: str = "marketpulse.marketdata.functions",
        log_path: Path | None = None,
    ) -> None:
        super().__init__(
            port or free_port(),
            log_path or db_path.with_suffix(".serve.log"),
            {"MARKETPULSE_ADMIN_KEY": admin_key},
        )
        self.db_path = db_path
        self.functions = functions

    def _argv(self) -> list[str]:
        return [
            "serve",
            "--port", str(self.port),
            "--db", f"sqlite:{self.db_path}",
            "--functions", self.functions,
        ]  # fmt: skip

    def _ready(self) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False


class DevProcess(_Child):
    """``marketpulse dev`` (Temporal, store, simulator, worker, stream) on free ports.

    Args:
        data_dir: its state directory (Temporal db, store SQLite, key, logs).
        sim_markets: how many markets the simulator lists (all are streamed).
        sim_rate: the simulator's messages per second.
    """

    name = "marketpulse dev"
    stop_timeout = 60.0

    def __init__(self, data_dir: Path, *, sim_markets: int = 6, sim_rate: float = 100.0) -> None:
        super().__init__(free_port(), data_dir.parent / f"{data_dir.name}.dev.log")
        self.data_dir = data_dir
        self.sim_markets = sim_markets
        self.sim_rate = sim_rate
        self.ready_file = data_dir / "ready"

    def _argv(self) -> list[str]:
        return [
            "dev",
            "--data-dir", str(self.data_dir),
            "--port", str(self.port),
            "--temporal-port", str(free_port()),
            "--temporal-ui-port", str(free_port()),
            "--simulator-port", str(free_port()),
            "--sim-markets", str(self.sim_markets),
            "--sim-rate", str(self.sim_rate),
            "--ready-file", str(self.ready_file),
        ]  # fmt: skip

    def _ready(self) -> bool:
        return self.ready_file.exists()

    def start(self, timeout: float = 120.0) -> Self:
        """Start everything and wait for its ready file (see :meth:`_Child.start`)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return super().start(timeout)
