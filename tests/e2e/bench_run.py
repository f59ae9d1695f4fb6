"""Runs a script of ``bench/`` as a user would, for the tests that check it end to end."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_bench(
    script: str, *args: str, timeout: float = 300, fd_limit: int | None = None
) -> tuple[dict[str, Any], str]:
    """Run ``bench/<script>`` with ``args``; return its figures (the last line of its output,
    JSON) and its whole output. It must exit 0.

    Args:
        fd_limit: Lower the script's descriptor limit (soft and hard) to this first.
    """

    def lower_fd_limit() -> None:
        if fd_limit is not None:  # lowering the hard limit needs no privilege
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    out = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=lower_fd_limit,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures, out.stdout
