"""The ``marketpulse`` command: assembling every subcommand loads none of their machinery.

Every invocation (``--help`` included) imports each package's ``_cli`` module to register its
commands; what a command runs is imported when it runs. Before this held, ``marketpulse
--help`` loaded Temporal, the simulator and the Kalshi client and took twice as long
(``bench/cli_start.py``, CHANGELOG session 25).
"""

from __future__ import annotations

import subprocess
import sys

from loaded import modules_loaded_by

HEAVY = (
    "temporalio",  # the pipeline's workflow and worker
    "marketpulse.pipeline.workflow",
    "marketpulse.simulator._server",
    "marketpulse.kalshi.feed",  # websockets
    "marketpulse.kalshi.rest",  # httpx
    "httpx",
    "websockets",
    "marketpulse.reactive.engine",
    "uvicorn",
)


def test_registering_every_command_loads_no_command_machinery() -> None:
    loaded = modules_loaded_by("marketpulse.cli")
    assert "marketpulse.simulator._cli" in loaded  # the commands were registered
    assert sorted(loaded.intersection(HEAVY)) == []


def test_every_command_is_listed() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "marketpulse", "--help"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    for command in ("serve", "simulate", "record", "worker", "dev", "bench"):
        assert command in out.stdout
