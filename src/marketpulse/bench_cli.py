"""``marketpulse bench``: run the benchmark suite and keep its results.

Every benchmark is a plain script under ``bench/`` that prints a table and, as its last line,
one JSON object with its figures. This module only runs them, collects that JSON, and writes
``bench/results/<name>.json``, the script's printed tables (``<name>.txt``), a Markdown summary
and PNG plots. The scripts stay runnable on
their own (``python bench/fanout.py --quick``), which is how they are developed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
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
    "latency": ("sync_latency.py", "dashboard_latency.py", "lifecycle.py"),
    "ingest": (
        "pipeline_throughput.py",
        "kalshi_protocol.py",
        "marketdata_apply.py",
        "alerts.py",
        "simulator_rate.py",
    ),
    "fanout": ("subscriptions_find.py", "cluster_fanout.py"),
}
"""Each layer's own benchmark, run after the headline ones in a full (not ``--quick``) run:
``--quick`` must end within a minute, and these each take about that long on their own."""


BENCH_MODULES: tuple[str, ...] = ("convex", "matplotlib", "playwright", "redis")
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


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value


def summary_markdown(runs: list[BenchRun]) -> str:
    """A Markdown summary: one section per script, one row per figure."""
    lines = ["# Benchmark results", "", f"Run at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}", ""]
    for run in runs:
        if run.earlier is not None:
            lines += [f"## {run.script} (earlier run, {run.earlier})", ""]
        else:
            status = "ok" if run.returncode == 0 and run.figures is not None else "FAILED"
            lines += [f"## {run.script} ({status}, {run.seconds:.1f} s)", ""]
        if run.figures:
            flat: dict[str, Any] = {}
            _flatten("", run.figures, flat)
            lines += ["| figure | value |", "|---|---|"]
            lines += [f"| {key} | {value} |" for key, value in flat.items()]
        lines.append("")
    return "\n".join(lines)


def plot_runs(runs: list[BenchRun], out_dir: Path) -> list[Path]:
    """One bar chart per script of its numeric figures that are latencies (keys with ``ms``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the command checks for the bench extra; plots are a bonus here
        return []
    written = []
    for run in runs:
        if not run.figures:
            continue
        flat: dict[str, Any] = {}
        _flatten("", run.figures, flat)
        numeric = {
            k: float(v)
            for k, v in flat.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and "ms" in k.lower()
        }
        if not numeric:
            continue
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(numeric) + 1.5))
        ax.barh(list(numeric), list(numeric.values()), color="#3b82f6")
        ax.set_xlabel("ms")
        ax.set_title(run.script)
        fig.tight_layout()
        path = out_dir / f"{Path(run.script).stem}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


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
    # The summary covers every result on disk, so running one suite does not drop the others'
    # figures from it; those keep the date of their own run (RUNS.json: file times do not
    # survive a git clone).
    index_path = out_dir / "RUNS.json"
    index: dict[str, str] = json.loads(index_path.read_text()) if index_path.exists() else {}
    now = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    index.update({run.script: now for run in runs if run.figures is not None})
    index_path.write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n")
    ran = {run.script for run in runs}
    kept = [
        BenchRun(
            script=f"{path.stem}.py",
            returncode=0,
            seconds=float("nan"),
            figures=json.loads(path.read_text()),
            earlier=index.get(f"{path.stem}.py", "date unknown"),
        )
        for path in sorted(out_dir.glob("*.json"))
        if path != index_path and f"{path.stem}.py" not in ran
    ]
    (out_dir / "SUMMARY.md").write_text(summary_markdown([*runs, *kept]))
    plot_runs(runs, out_dir)
    return runs


def register(app: typer.Typer) -> None:
    """Add ``marketpulse bench`` to the CLI."""

    @app.command()
    def bench(
        suite: str = typer.Argument(
            "all", help="latency | ingest | fanout | growth | all", show_default=True
        ),
        quick: bool = typer.Option(
            False, "--quick", help="Small sizes; the suite ends in a minute."
        ),
        timeout: float = typer.Option(900.0, help="Seconds each script may take."),
    ) -> None:
        """Run the benchmark suite; results go to bench/results/ (JSON, SUMMARY.md, PNG)."""
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
