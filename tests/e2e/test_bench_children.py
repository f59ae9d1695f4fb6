"""A benchmark killed outright takes its client processes with it: a fleet child left behind
stays subscribed (to Redis, it then loads every later run's host)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from marketpulse.testing import ManagedProcess

pytestmark = pytest.mark.e2e

PARENT = Path(__file__).with_name("bench_orphan_parent.py")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize(("mode", "survives"), [("guarded", False), ("unguarded", True)])
def test_a_fleet_child_ends_with_its_benchmark(tmp_path: Path, mode: str, survives: bool) -> None:
    log = tmp_path / "parent.log"
    # stop() kills the whole process group, the child included, whatever the outcome.
    with ManagedProcess("bench", [sys.executable, str(PARENT), mode], log_path=log) as parent:
        parent.wait_ready(lambda: log.read_text().strip().isdigit(), 30, "started its child")
        child = int(log.read_text())
        os.kill(parent.pid, signal.SIGKILL)  # the benchmark alone, as a timeout would
        parent.wait(10)
        deadline = time.monotonic() + 3.0
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive(child) is survives
