"""Helpers shared by the benchmark scripts: output, and a process's memory and CPU.

Processes, ports, percentiles and admin calls come from the test harness,
:mod:`marketpulse.testing`.

Every script prints a table and, as its last line, one JSON object with its figures
(``emit``); ``marketpulse bench`` collects that line.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
"""This folder: where the benchmarks' own functions modules (``sync_latency_app``) live."""
SRC = ROOT / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from marketpulse.testing import summarize_ms  # noqa: E402

console = Console(stderr=False, highlight=False, width=160)


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


FLEET_FLAGS = ("--max-connections-per-client", "0")
"""``serve`` flags for a store under a benchmark's client fleet: the whole fleet connects from one
address (127.0.0.1), which the per-address connection cap (1,000 by default) would refuse."""


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
