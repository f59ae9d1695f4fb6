"""Paths and a runner for the dashboard's Node tools (installed by scripts/install.sh --dev)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"


def node_bin(tool: str) -> Path:
    """A tool from web/node_modules/.bin; fails (not skips) when web/ was not installed."""
    path = WEB / "node_modules" / ".bin" / tool
    if not path.exists():
        pytest.fail(
            f"{path} is missing: run `bash scripts/install.sh --dev` (npm ci in web/)",
            pytrace=False,
        )
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH", pytrace=False)
    return path


class NodeTools:
    """Runs tools from web/node_modules/.bin (the ``node`` fixture)."""

    web = WEB

    def run(
        self, tool: str, *args: str, cwd: Path = WEB, timeout: float = 240
    ) -> subprocess.CompletedProcess[str]:
        """See :func:`run_node_tool`."""
        return run_node_tool(tool, *args, cwd=cwd, timeout=timeout)


@pytest.fixture
def node() -> NodeTools:
    """Runs the dashboard's Node tools."""
    return NodeTools()


def run_node_tool(
    tool: str, *args: str, cwd: Path = WEB, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run a web/ tool to completion and return its output (never raises on exit status)."""
    env = {**os.environ, "CI": "true", "NO_COLOR": "1", "FORCE_COLOR": "0"}
    return subprocess.run(
        [str(node_bin(tool)), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
