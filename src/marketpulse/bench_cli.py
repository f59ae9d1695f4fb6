"""``marketpulse bench``: run the benchmark suite and keep its results.

Every benchmark is a plain script under ``bench/`` that prints a table and, as its last line,
one JSON object with its figures. This module only runs them, collects that JSON, and writes
``bench/results/<name>.json`` and the script's printed tables (``<name>.txt``);
:mod:`marketpulse._bench_report` turns the results into ``SUMMARY.md`` and the plots. The scripts stay runnable on
their own (``python bench/fanout.py --quick``), which is how they are developed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

SUITES: dict[str, tuple[str, ...]] = {
    "latency": ("latency.py",),
    "ingest": ("ingest.py",),
    "fanout": ("fanout.py",),
    "growth": ("growth.py",),
    "hostile": ("hostile.py",),
}
"""The headline script of each suite (issue 7's scenarios); ``all`` runs every one once."""

DETAIL: dict[str, tuple[str, ...]] = {
    "latency": (
        "slow_disk.py",
        "sync_latency.py",
        "metrics_scrape.py",
        "dashboard_latency.py",
        "dashboard_pushes.py",
        "lifecycle.py",
    ),
    "ingest": (
        "pipeline_throughput.py",
        "kalshi_protocol.py",
        "marketdata_apply.py",
        "batch_codec.py",
        "alerts.py",
        "simulator_rate.py",
    ),
    "fanout": ("subscriptions_find.py", "cluster_fanout.py"),
}
"""Each layer's own benchmark, run after the headline ones in a full (not ``--quick``) run:
``--quick`` must end within a minute, and these each take about that long on their own."""


BENCH_MODULES: tuple[str, ...] = ("convex", "matplotlib", "playwright", "redis", "hiredis")
"""What the scripts import beyond the base install: the ``bench`` extra of pyproject.toml."""

INSTALL_HINT = "pip install 'marketpulse[bench]'"


def missing_modules() -> list[str]:
    """The modules of :data:`BENCH_MODULES` this interpreter cannot import."""
    return [name for name in BENCH_MODULES if importlib.util.find_spec(name) is None]


@dataclass
class BenchRun:
    """The outcome of one benchmark script."""

    script: str
    returncode: int
    seconds: float
    figures: dict[str, Any] | None
    earlier: str | None = None
    """For a result kept from an earlier invocation: when its JSON was written."""
    output: str = ""
    """Everything the script printed (its tables)."""


def find_bench_dir() -> Path:
    """The ``bench/`` folder of this checkout (or of the current directory)."""
    candidates = [Path.cwd() / "bench", Path(__file__).resolve().parents[2] / "bench"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no bench/ folder: run from a marketpulse checkout")


def last_json_line(output: str) -> dict[str, Any] | None:
    """The figures a benchmark printed: its last line that parses as a JSON object."""
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
    return None


def run_script(path: Path, quick: bool, timeout_s: float) -> BenchRun:
    """Run one benchmark script, echoing its output as it goes."""
    args = [sys.executable, str(path)] + (["--quick"] if quick else [])
    started = time.perf_counter()
    lines: list[str] = []
    env = dict(os.environ)
    src = str(path.resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as proc:
        assert proc.stdout is not None
        deadline = started + timeout_s
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
            if time.perf_counter() > deadline:
                proc.kill()
                break
        returncode = proc.wait()
    return BenchRun(
        script=path.name,
        returncode=returncode,
        seconds=time.perf_counter() - started,
        figures=last_json_line("".join(lines)),
        output="".join(lines),
    )


def run_suite(suite: str, quick: bool, timeout_s: float) -> list[BenchRun]:
    """Run a suite (or ``all``) and write its results under ``bench/results/`` (a ``--quick``
    run under ``bench/results/quick/``)."""
    bench_dir = find_bench_dir()
    suites = list(SUITES) if suite == "all" else [suite]
    chosen = [SUITES[name] for name in suites]
    if not quick:
        chosen += [DETAIL.get(name, ()) for name in suites]
    names = tuple(dict.fromkeys(n for scripts in chosen for n in scripts))
    # A quick run's small sizes must never replace a full run's figures.
    out_dir = bench_dir / "results" / "quick" if quick else bench_dir / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for name in names:
        path = bench_dir / name
        if not path.exists():
            typer.secho(f"[bench] {name}: not present, skipped", fg="yellow")
            continue
        typer.secho(f"[bench] {name}", bold=True)
        run = run_script(path, quick, timeout_s)
        runs.append(run)
        if run.figures is not None:
            (out_dir / f"{path.stem}.json").write_text(json.dumps(run.figures, indent=2) + "\n")
            (out_dir / f"{path.stem}.txt").write_text(run.output)
    index_path = out_dir / "RUNS.json"
    index: dict[str, str] = json.loads(index_path.read_text()) if index_path.exists() else {}
    now = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    index.update({run.script: now for run in runs if run.figures is not None})
    index_path.write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n")
    render_results(out_dir, index, runs)
    return runs


def render_results(out_dir: Path, index: dict[str, str], runs: Sequence[BenchRun] = ()) -> None:
    """Rewrite ``SUMMARY.md`` and the plots from every result on disk, so running one suite
    does not drop the others' figures; those keep the date of their own run (``RUNS.json``:
    file times do not survive a git clone)."""
    from marketpulse._bench_report import render

    notes = {Path(script).stem: f"earlier run, {date}" for script, date in index.items()}
    for run in runs:
        ok = run.returncode == 0 and run.figures is not None
        notes[Path(run.script).stem] = (
            f"ran now: {'ok' if ok else 'FAILED'}, {run.seconds:.1f} s"
            + ("" if ok else " (its table shows the previous result, if any)")
        )
    render(out_dir, notes, time.strftime("%Y-%m-%d %H:%M:%S %Z"))


def register(app: typer.Typer) -> None:
    """Add ``marketpulse bench`` to the CLI."""

    @app.command()
    def bench(
        suite: str = typer.Argument(
            "all",
            help="latency | ingest | fanout | growth | all; report: only rewrite SUMMARY.md "
            "and the plots from the results on disk",
            show_default=True,
        ),
        quick: bool = typer.Option(
            False, "--quick", help="Small sizes; the suite ends in a minute."
        ),
        timeout: float = typer.Option(900.0, help="Seconds each script may take."),
    ) -> None:
        """Run the benchmark suite; results go to bench/results/ (JSON, SUMMARY.md, PNG)."""
        if suite == "report":
            out_dir = find_bench_dir() / "results" / ("quick" if quick else "")
            index_path = out_dir / "RUNS.json"
            index = json.loads(index_path.read_text()) if index_path.exists() else {}
            render_results(out_dir, index)
            typer.echo(f"wrote {out_dir / 'SUMMARY.md'} and its plots")
            return
        if suite != "all" and suite not in SUITES:
            raise typer.BadParameter(
                f"unknown suite {suite!r}; choose from {', '.join(SUITES)}, all"
            )
        missing = missing_modules()
        if missing:
            typer.echo(f"marketpulse bench needs {', '.join(missing)}: {INSTALL_HINT}", err=True)
            raise typer.Exit(2)
        runs = run_suite(suite, quick, timeout)
        failed = [r.script for r in runs if r.returncode != 0 or r.figures is None]
        typer.echo(json.dumps({"suite": suite, "quick": quick, "ran": len(runs), "failed": failed}))
        if failed:
            raise typer.Exit(1)
