"""A private PostgreSQL server for fault tests: Debian's binaries, a temporary data folder, a
free port on 127.0.0.1, trust authentication; stopped and started again on the same port and
data, so a test can take the database away from running store nodes and give it back."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Self

from marketpulse._components import ChildProcess
from marketpulse._process import free_port

__all__ = ["PostgresProcess", "postgres_bin"]

_ENV_BIN = "MARKETPULSE_PG_BIN"


def postgres_bin() -> Path:
    """The folder holding ``initdb`` and ``postgres``: ``$MARKETPULSE_PG_BIN``, else the newest
    of Debian's ``/usr/lib/postgresql/*/bin``.

    Raises:
        FileNotFoundError: no PostgreSQL server binaries are installed.
    """
    given = os.environ.get(_ENV_BIN)
    found = [given] if given else glob.glob("/usr/lib/postgresql/*/bin")
    found = [d for d in found if os.access(os.path.join(d, "initdb"), os.X_OK)]
    if not found:
        raise FileNotFoundError(
            "no PostgreSQL server binaries (initdb, postgres) in /usr/lib/postgresql/*/bin;"
            f" install Debian's postgresql package or set {_ENV_BIN}"
        )
    return Path(max(found, key=lambda d: int(Path(d).parent.name or 0)))


class PostgresProcess(ChildProcess):
    """``postgres`` on 127.0.0.1 with its own data folder, for tests that stop the database.

    The data folder is made by ``initdb`` on the first :meth:`start` and kept across
    :meth:`stop`/:meth:`start` (and :meth:`kill`: the next start recovers from the WAL), until
    :meth:`remove` (the context manager's exit). PostgreSQL refuses to run as root, so when
    this process is root the server runs as the ``postgres`` user (``setpriv``), in a folder
    it owns.

    Args:
        log_path: Where the server's output goes (appended across restarts).
        port: Its port (default: a free one, kept across restarts).
        settings: More server settings (``-c name=value``), e.g. ``{"fsync": "off"}``.
    """

    name = "postgres"
    start_timeout: ClassVar[float] = 60.0
    stop_timeout: ClassVar[float] = 30.0

    def __init__(
        self,
        log_path: Path,
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(log_path, env={"LC_ALL": "C"})
        self.port = port or free_port()
        self.settings = dict(settings or {})
        self.bin = postgres_bin()
        self._user = "postgres" if os.geteuid() == 0 else None
        self._home: Path | None = None
        self.waits_for = f"accepting connections on 127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/postgres`` (trust: no password)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data_dir(self) -> Path:
        """The data folder (made on the first start)."""
        if self._home is None:
            # Not under the test's tmp_path: pytest makes that readable by root alone.
            self._home = Path(tempfile.mkdtemp(prefix="mp-postgres-"))
            if self._user is not None:
                os.chown(self._home, *self._ids())
        return self._home / "data"

    def _ids(self) -> tuple[int, int]:
        assert self._user is not None
        entry = pwd.getpwnam(self._user)
        return entry.pw_uid, entry.pw_gid

    def _as_user(self, argv: list[str]) -> list[str]:
        if self._user is None:
            return argv
        # setpriv execs in place (the server keeps this child's pid and process group) and
        # sets the parent-death signal after the uid change, which would clear it: the
        # server goes (fast shutdown) if whoever started it dies.
        return [
            "setpriv",
            f"--reuid={self._user}",
            f"--regid={self._user}",
            "--init-groups",
            "--pdeathsig=INT",
            "--",
            *argv,
        ]

    def _initdb(self) -> None:
        data = self.data_dir
        if (data / "PG_VERSION").exists():
            return
        argv = [str(self.bin / "initdb"), "-D", str(data), "-U", "postgres"]
        argv += ["--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C"]
        done = subprocess.run(
            self._as_user(argv),
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr[-2000:]}")

    def argv(self) -> list[str]:
        argv = [str(self.bin / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",
            "max_connections": "100",
            "log_timezone": "UTC",  # a test may read the log's times
            **self.settings,
        }
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return self._as_user(argv)

    def ready(self) -> bool:
        probe = [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            return subprocess.run(probe, timeout=5, check=False).returncode == 0
        return False

    def start(self, timeout: float | None = None) -> Self:
        """Make the data folder if needed, start the server and wait until it accepts
        connections.

        Raises:
            FileNotFoundError: no PostgreSQL binaries.
            RuntimeError: initdb failed, or the server exited first (with its log's tail).
            TimeoutError: not ready in time (it is stopped).
        """
        self._initdb()
        super().start(timeout)
        return self

    def stop(self, timeout: float | None = None) -> int | None:
        """Fast shutdown (SIGINT: clients are disconnected, committed data kept), then the
        whole process group as any child; returns the exit code."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(self.stop_timeout if timeout is None else timeout)
        return super().stop(timeout)

    def remove(self) -> None:
        """Stop the server and delete its data folder."""
        self.stop()
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def __exit__(self, *exc: object) -> None:
        self.remove()
