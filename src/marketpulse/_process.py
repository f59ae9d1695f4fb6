"""Child processes that never outlive their parent, and the probes that tell they are ready.

Each child runs in its own session (so a terminal's Ctrl-C reaches only the launcher, which
then stops the children in order) and, on Linux, asks the kernel to SIGTERM it if the launcher
dies (``PR_SET_PDEATHSIG``), so even a SIGKILLed launcher leaves no orphan. Stopping signals the
whole process group, waits, then SIGKILLs what is left.

``marketpulse dev`` and :mod:`marketpulse.testing` both start their children with this module.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Self

import httpx

__all__ = [
    "ManagedProcess",
    "ephemeral_ports",
    "free_port",
    "http_ok",
    "marketpulse_env",
    "port_open",
]

_PR_SET_PDEATHSIG = 1
_SRC = str(Path(__file__).resolve().parents[1])


def _child_setup() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def marketpulse_env(extra_paths: Sequence[str | os.PathLike[str]] = ()) -> dict[str, str]:
    """Environment that makes ``python -m marketpulse`` children import this same checkout.

    Args:
        extra_paths: Folders put first on the child's ``PYTHONPATH`` (e.g. where a functions
            module lives).
    """
    first = [str(p) for p in extra_paths] + [_SRC]
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in first]
    return {"PYTHONPATH": os.pathsep.join([*first, *rest])}


# The lowest port free_port() hands out: the usual service ports below it (PostgreSQL 5432,
# Redis 6379, NATS 4222, AMQP 5672) are never picked; a listener above it fails the bind check.
_PORTS_FROM = 10_000
_handed_out: set[int] = set()


def ephemeral_ports() -> tuple[int, int]:
    """This host's ``ip_local_port_range`` (Linux's default if it cannot be read)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, and outside the ephemeral range.

    A port the kernel picks for ``bind(0)`` comes from the ephemeral range, the same range it
    takes every outgoing connection's local port from: between this call and the child's own
    ``bind``, any connection on the host may take it (CI saw Temporal's HTTP port go that way).
    A port outside that range can only be taken by another listener, so this picks one at
    random there, checks that it binds, and never hands the same one out twice in a process.
    """
    low, high = ephemeral_ports()
    below, above = range(_PORTS_FROM, low), range(high + 1, 65_536)
    for _ in range(200 if below or above else 0):
        i = random.randrange(len(below) + len(above))
        port = below[i] if i < len(below) else above[i - len(below)]
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether 127.0.0.1:port accepts a connection now (a readiness probe)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    """Whether ``GET url`` answers 200 now (a readiness probe)."""
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


class ManagedProcess:
    """One child process in its own process group, output to a log file.

    Usable as a context manager: started on entry, stopped on exit.

    Args:
        name: Short name for messages.
        argv: Command line.
        log_path: Where stdout and stderr go (appended); None inherits the parent's.
        env: Extra environment variables (merged over the parent's).
        cwd: Working directory.
        pythonpath: Folders put first on the child's ``PYTHONPATH``.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        pythonpath: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._env = {**os.environ, **marketpulse_env(pythonpath), **(env or {})}
        self._cwd = cwd
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        """Start the child."""
        out: IO[bytes] | None = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = out = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            env=self._env,
            cwd=self._cwd,
            start_new_session=True,
            preexec_fn=_child_setup,
        )
        return self

    def wait_ready(self, ready: Callable[[], bool], timeout: float, what: str = "ready") -> None:
        """Poll ``ready`` every 0.1 s until it holds.

        Args:
            ready: The readiness probe (e.g. :func:`port_open` or :func:`http_ok` bound to an
                address).
            timeout: Seconds to wait.
            what: What ``ready`` checks, for the timeout's message.

        Raises:
            RuntimeError: The child exited first (the message ends with its log's tail).
            TimeoutError: Not ready in time (the message ends with its log's tail).
        """
        end = time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                raise RuntimeError(f"{self.name} exited with {code}{self.log_tail()}")
            if ready():
                return
            if time.monotonic() > end:
                raise TimeoutError(f"{self.name} not {what} after {timeout:g}s{self.log_tail()}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        """The child's pid (= its process group id)."""
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 15) -> str:
        """The log's last ``lines`` lines, for an error message (the log may not outlive the
        message: a temporary folder is often removed right after)."""
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 16_384))
                text = f.read().decode(errors="replace")
        except OSError:
            return f"; see {self.log_path}"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"; the end of {self.log_path}:\n{tail}" if tail else f"; {self.log_path} is empty"

    def poll(self) -> int | None:
        """Exit code, or None while running."""
        return None if self.proc is None else self.proc.poll()

    def wait(self, timeout: float) -> int:
        """Wait for the child to exit on its own; returns its exit code.

        Raises:
            subprocess.TimeoutExpired: Still running after ``timeout``.
        """
        assert self.proc is not None
        return self.proc.wait(timeout)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child's whole process group."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the group, wait up to ``timeout``, then SIGKILL it; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        # Stragglers the child left in its group (e.g. a shim's grandchild).
        self.signal(signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the group now (fault injection) and reap the child."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)

    def __enter__(self) -> Self:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
