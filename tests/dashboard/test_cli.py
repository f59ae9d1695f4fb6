"""``marketpulse codegen`` as a user runs it: a functions module in, api.d.ts/api.js out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FUNCTIONS = '''
from typing import Literal, TypedDict
from marketpulse.reactive import FunctionModule, MutationCtx, QueryCtx

class Note(TypedDict):
    id: str
    text: str

notes = FunctionModule("notes")

@notes.query
def list(ctx: QueryCtx, tag: Literal["work", "home"] | None = None) -> list[Note]:
    """Notes, newest first."""
    return []

@notes.internal_mutation
def purge(ctx: MutationCtx) -> int:
    return 0
'''


def _codegen(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp), os.environ["PYTHONPATH"]])}
    return subprocess.run(
        [sys.executable, "-m", "marketpulse", "codegen", *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_writes_declarations_and_checks_them(tmp_path: Path) -> None:
    (tmp_path / "my_notes.py").write_text(FUNCTIONS)
    out = tmp_path / "gen"
    r = _codegen(tmp_path, "--functions", "my_notes", "--out", str(out))
    assert r.returncode == 0, r.stderr
    d_ts = (out / "api.d.ts").read_text()
    assert "notes: {" in d_ts
    assert '{ tag?: "work" | "home" | null }' in d_ts
    assert "Array<{ id: string; text: string }>" in d_ts
    assert "/** Notes, newest first. */" in d_ts
    assert '"mutation",\n      "internal",\n      Record<string, never>,\n      number,' in d_ts
    assert "anyApi" in (out / "api.js").read_text()
    assert "public   query    notes:list" in r.stdout

    assert (
        _codegen(tmp_path, "--functions", "my_notes", "--out", str(out), "--check").returncode == 0
    )
    (tmp_path / "my_notes.py").write_text(FUNCTIONS.replace('"home"', '"away"'))
    stale = _codegen(tmp_path, "--functions", "my_notes", "--out", str(out), "--check")
    assert stale.returncode == 1
    assert "api.d.ts" in stale.stdout
    assert '"home"' in (out / "api.d.ts").read_text()  # --check writes nothing


def test_the_console_script_finds_functions_in_the_current_directory(tmp_path: Path) -> None:
    # As the ``marketpulse`` console script runs: ``-P`` leaves the current directory off
    # sys.path, and the app's folder is not on PYTHONPATH.
    (tmp_path / "my_notes.py").write_text(FUNCTIONS)
    script = "from marketpulse.cli import main; main()"
    r = subprocess.run(
        [sys.executable, "-P", "-c", script, "codegen", "--functions", "my_notes", "--out", "gen"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "notes: {" in (tmp_path / "gen" / "api.d.ts").read_text()


def test_bad_modules_are_clear_errors(tmp_path: Path) -> None:
    r = _codegen(tmp_path, "--functions", "no_such_module_here", "--out", str(tmp_path / "g"))
    assert r.returncode == 2
    assert "cannot import functions module 'no_such_module_here'" in r.stderr
    r = _codegen(tmp_path, "--functions", "json", "--out", str(tmp_path / "g"))
    assert r.returncode == 2
    assert "defines no FunctionModule" in r.stderr
    assert not (tmp_path / "g").exists()
