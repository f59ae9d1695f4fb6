import ast
import json
import re
import sys
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from marketpulse import bench_cli
from marketpulse.cli import app


def test_last_json_line_takes_the_final_object() -> None:
    output = 'table\n{"a": 1}\nmore\n{"b": {"c": 2}}\n'
    assert bench_cli.last_json_line(output) == {"b": {"c": 2}}
    assert bench_cli.last_json_line("no figures here\n") is None
    assert bench_cli.last_json_line("{broken\n") is None


LATENCY_FIGURES = {
    "runs": [
        {
            "rate": 1000.0,
            "from_send": {
                "official_npm": {"n": 9, "p50_ms": 1.5, "p99_ms": 4.0, "p999_ms": 6.0},
                "redis": {"n": 9, "p50_ms": 1.0, "p99_ms": 2.0, "p999_ms": 3.0},
            },
        }
    ]
}


def test_suite_writes_results_summary_and_plot(tmp_path: Path, monkeypatch) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "latency.py").write_text(
        "import json, sys\n"
        "print('| p50 | p99 |')\n"
        f"figures = {LATENCY_FIGURES!r}\n"
        "figures['quick'] = '--quick' in sys.argv\n"
        "print(json.dumps(figures))\n"
    )
    (bench / "sync_latency.py").write_text("raise SystemExit(3)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(bench_cli.SUITES, "latency", ("latency.py", "sync_latency.py"))
    result = CliRunner().invoke(app, ["bench", "latency", "--quick"])
    assert result.exit_code == 1, result.output  # one script failed
    summary_line = json.loads(result.output.strip().splitlines()[-1])
    assert summary_line == {
        "suite": "latency",
        "quick": True,
        "ran": 2,
        "failed": ["sync_latency.py"],
    }
    quick_dir = bench / "results" / "quick"  # never over a full run's results
    assert not (bench / "results" / "latency.json").exists()
    figures = json.loads((quick_dir / "latency.json").read_text())
    assert figures == {**LATENCY_FIGURES, "quick": True}
    assert "| p50 | p99 |" in (quick_dir / "latency.txt").read_text()
    summary = (quick_dir / "SUMMARY.md").read_text()
    assert "| 1,000 msgs/s, p99 | 4 ms | <= 3x Redis | Redis 2 ms | 2.00x |" in summary
    assert "ran now: FAILED" in summary
    assert (quick_dir / "latency_vs_rate.png").stat().st_size > 1000
    # The report alone, from the results on disk.
    (quick_dir / "SUMMARY.md").unlink()
    again = CliRunner().invoke(app, ["bench", "report", "--quick"])
    assert again.exit_code == 0, again.output
    assert "| 1,000 msgs/s, p99 | 4 ms |" in (quick_dir / "SUMMARY.md").read_text()


def test_unknown_suite_is_a_clear_error() -> None:
    result = CliRunner().invoke(app, ["bench", "nonsense"], env={"COLUMNS": "200"})
    assert result.exit_code != 0
    assert "unknown suite" in result.output


def test_quick_runs_the_headline_scripts_and_a_full_run_adds_each_layers_own(
    tmp_path: Path, monkeypatch
) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    for name in ("fanout.py", "subscriptions_find.py"):
        (bench / name).write_text(f'print(\'{{"script": "{name}"}}\')\n')
    monkeypatch.chdir(tmp_path)
    quick = CliRunner().invoke(app, ["bench", "fanout", "--quick"])
    assert quick.exit_code == 0, quick.output
    assert json.loads(quick.output.strip().splitlines()[-1])["ran"] == 1
    full = CliRunner().invoke(app, ["bench", "fanout"])
    assert full.exit_code == 0, full.output
    assert json.loads(full.output.strip().splitlines()[-1])["ran"] == 2
    assert (bench / "results" / "subscriptions_find.json").exists()


def test_summary_keeps_the_figures_of_suites_not_run_this_time(tmp_path: Path, monkeypatch) -> None:
    bench = tmp_path / "bench"
    (bench / "results").mkdir(parents=True)
    (bench / "results" / "ingest.json").write_text(json.dumps({"sustained_msgs_per_s": 43079}))
    (bench / "results" / "RUNS.json").write_text(json.dumps({"ingest.py": "2026-11-24 13:18:06"}))
    (bench / "fanout.py").write_text("print('{\"clients_seen\": 9.5}')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(bench_cli.DETAIL, "fanout", ())
    result = CliRunner().invoke(app, ["bench", "fanout"])
    assert result.exit_code == 0, result.output
    summary = (bench / "results" / "SUMMARY.md").read_text()
    assert "(`fanout`)" in summary and "ran now: ok," in summary
    assert "earlier run, 2026-11-24 13:18:06" in summary
    assert "| sustained msgs/s | 43,079 |" in summary and "RUNS" not in summary
    runs = json.loads((bench / "results" / "RUNS.json").read_text())
    assert set(runs) == {"ingest.py", "fanout.py"}


def test_without_the_bench_extra_it_names_the_extra_in_one_line(
    tmp_path: Path, monkeypatch
) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "latency.py").write_text("raise SystemExit('must not run')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "redis", None)  # as if it were not installed
    result = CliRunner().invoke(app, ["bench", "latency", "--quick"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "marketpulse bench needs redis: pip install 'marketpulse[bench]'"
    ]
    assert not (bench / "results").exists()


def test_the_bench_extra_holds_what_the_scripts_import_beyond_the_base_install() -> None:
    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def module_names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].replace("-", "_") for r in requirements}

    assert module_names(extras["bench"]) == set(bench_cli.BENCH_MODULES)
    assert "marketpulse[bench]" in extras["dev"]
    scripts = sorted((root / "bench").glob("*.py"))
    imported = set()
    for script in scripts:
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.partition(".")[0])
    # Scripts may drive the repository's own test helpers (tests/ is on their path).
    helpers = {p.name for p in (root / "tests").iterdir() if (p / "__init__.py").exists()}
    local = {script.stem for script in scripts} | {"marketpulse"} | helpers
    third_party = imported - set(sys.stdlib_module_names) - local - {"__future__"}
    installed = module_names(project["dependencies"]) | set(bench_cli.BENCH_MODULES)
    assert sorted(third_party - installed) == []
