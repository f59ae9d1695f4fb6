"""Connecting to a Temporal that is not ready yet: bounded retries, then a clear error."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from marketpulse.pipeline._connect import connect_temporal
from marketpulse.testing import ManagedProcess, TemporalProcess, WorkerProcess, free_port

pytestmark = pytest.mark.timeout(120)


async def test_nothing_listening_is_a_clear_error_after_the_timeout() -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"no answer within 1s"):
        await connect_temporal(address, timeout=1.0)
    assert time.monotonic() - started < 10


async def test_a_server_that_exits_ends_the_wait_at_once(tmp_path: Path) -> None:
    dead = ManagedProcess("temporal", [sys.executable, "-c", "exit(4)"]).start()
    assert dead.proc is not None
    dead.proc.wait()
    with pytest.raises(RuntimeError, match="temporal exited with 4"):
        await connect_temporal(f"127.0.0.1:{free_port()}", timeout=60.0, server=dead)


def test_a_worker_started_before_temporal_waits_for_it_then_polls(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "worker.log"
    worker = WorkerProcess(
        log,
        temporal=f"127.0.0.1:{port}",
        store_url=f"http://127.0.0.1:{free_port()}",
        admin_key="k" * 32,
    ).start()
    temporal: TemporalProcess | None = None
    try:
        deadline = time.monotonic() + 30
        while "Temporal not ready" not in (log.read_text() if log.exists() else ""):
            assert worker.poll() is None, worker.log()[-3000:]
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.1)
        temporal = TemporalProcess(tmp_path / "temporal.log", port=port).start()
        deadline = time.monotonic() + 60
        while "worker polling" not in log.read_text():
            assert worker.poll() is None, worker.log()[-3000:]
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.1)
    finally:
        worker.stop()
        if temporal is not None:
            temporal.stop()
