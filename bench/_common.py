"""Helpers shared by the benchmark scripts: servers on free ports, percentiles, output.

Every script prints a table and, as its last line, one JSON object with its figures
(``emit``); ``marketpulse bench`` collects that line.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

console = Console(stderr=False, highlight=False, width=160)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def summarize_ms(values: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / p999 / max of a list of millisecond latencies, rounded to 0.01 ms."""
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "p999_ms": round(percentile(values, 99.9), 3),
        "max_ms": round(max(values), 3) if values else float("nan"),
    }


def summarize_with_cpu(
    samples: dict[str, list[float]], cpu_s: dict[str, float], cpu_key: str
) -> dict[str, dict[str, float]]:
    """Per variant: :func:`summarize_ms` of its latencies plus its CPU µs per sample."""
    out = {}
    for name, values in samples.items():
        fig = summarize_ms(values)
        fig[cpu_key] = round(cpu_s[name] / len(values) * 1e6, 1)
        out[name] = fig
    return out


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a rich table."""
    table = Table(title=title)
    for header in headers:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*(f"{c:,.3f}" if isinstance(c, float) else str(c) for c in row))
    console.print(table)


def emit(figures: dict[str, Any]) -> None:
    """Print the figures as the last line, one JSON object."""
    sys.stdout.flush()
    print(json.dumps(figures, default=str), flush=True)


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def subprocess_env() -> dict[str, str]:
    """The environment for child processes: this checkout's src first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    return env


@contextlib.contextmanager
def running_store(
    data_dir: Path, *, functions: str | None = None, extra: Sequence[str] = ()
) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """Run ``marketpulse serve`` on a free port; yields (url, admin key, process)."""
    port = free_port()
    admin_key = secrets.token_hex(24)
    env = subprocess_env()
    env["MARKETPULSE_ADMIN_KEY"] = admin_key
    args = [sys.executable, "-m", "marketpulse", "serve", "--port", str(port)]
    args += ["--db", f"sqlite:{data_dir / 'store.sqlite'}"]
    if functions:
        args += ["--functions", functions]
    args += list(extra)
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc)
        yield url, admin_key, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    """Poll a URL until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def admin_mutation(url: str, admin_key: str, path: str, args: dict[str, Any]) -> Any:
    """Run an internal mutation over HTTP with the admin key; raise on a function error."""
    response = httpx.post(
        f"{url}/api/mutation",
        json={"path": path, "args": args, "format": "convex_encoded_json"},
        headers={"Authorization": f"Convex {admin_key}"},
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    if body.get("status") != "success":
        raise RuntimeError(f"{path}: {body.get('errorMessage')}")
    return body.get("value")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
