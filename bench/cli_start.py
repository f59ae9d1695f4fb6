"""How long the ``marketpulse`` command takes to start: ``--help``, and ``serve`` to its first
200 on ``/health`` (what a restarted store node costs its clients before it serves).

Baselines in the same run: a bare ``python -c pass`` (the interpreter's own start, the floor),
and with ``--before SRC`` the same commands on another checkout's ``src/`` (put first on
``PYTHONPATH``), alternated with this one.

    python bench/cli_start.py [--runs 7] [--before ../old/src]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _common import emit, print_table
from marketpulse.testing import free_port

READY_TIMEOUT_S = 30.0


def _env(src: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def _timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True, timeout=60)
    return time.perf_counter() - started


def _serve_ready(env: dict[str, str]) -> float:
    """Seconds from starting ``marketpulse serve`` (fresh SQLite file) to a 200 on /health."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "marketpulse", "serve", "--port", str(port),
                "--db", f"sqlite:{Path(tmp) / 'store.sqlite'}"]  # fmt: skip
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with httpx.Client(timeout=0.5) as http:
                while time.perf_counter() - started < READY_TIMEOUT_S:
                    try:
                        if http.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                            return time.perf_counter() - started
                    except httpx.TransportError:
                        pass
                    if proc.poll() is not None:
                        raise RuntimeError(f"serve exited with {proc.returncode}")
                    time.sleep(0.01)
            raise RuntimeError(f"serve not ready within {READY_TIMEOUT_S:g} s")
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 runs")
    parser.add_argument("--before", help="another checkout's src/ for the baseline")
    opts = parser.parse_args()
    runs = 3 if opts.quick else opts.runs
    variants: dict[str, str | None] = {"this": None}
    if opts.before:
        variants = {"before": opts.before, **variants}
    samples: dict[str, dict[str, list[float]]] = {
        name: {"help_s": [], "serve_ready_s": []} for name in variants
    }
    bare: list[float] = []
    for _ in range(runs):  # alternated: each round runs every variant once
        bare.append(_timed([sys.executable, "-c", "pass"], _env(None)))
        for name, src in variants.items():
            env = _env(src)
            samples[name]["help_s"].append(
                _timed([sys.executable, "-m", "marketpulse", "--help"], env)
            )
            samples[name]["serve_ready_s"].append(_serve_ready(env))
    figures: dict[str, Any] = {
        "bench": "cli_start",
        "runs": runs,
        "before_src": opts.before,
        "python_bare_s": round(statistics.median(bare), 3),
    }
    rows = [["python -c pass (floor)", round(statistics.median(bare), 3), "-", "-", "-"]]
    for name, per in samples.items():
        figures[name] = {}
        for key, values in per.items():
            figures[name][key] = round(statistics.median(values), 3)
            figures[name][f"{key}_max"] = round(max(values), 3)
        rows.append(
            [f"marketpulse ({name})", "-", figures[name]["help_s"], figures[name]["help_s_max"],
             f"{figures[name]['serve_ready_s']} (max {figures[name]['serve_ready_s_max']})"]
        )  # fmt: skip
    print_table(
        f"command start, median of {runs} (s)",
        ["run", "bare interpreter", "--help", "--help max", "serve to /health 200"],
        rows,
    )
    emit(figures)


if __name__ == "__main__":
    main()
