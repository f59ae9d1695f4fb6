"""Scheduled functions through a real store process: durable across a restart, run once,
never scheduled by a failed mutation, cancellable, listed in ``_scheduled_functions``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from marketpulse.testing import AdminClient, StoreProcess
from polling import wait_until

ADMIN_KEY = "e2e-admin-key-" + "1" * 16


def jobs(store: StoreProcess) -> dict[str, dict[str, Any]]:
    with AdminClient(store.url, timeout=10) as client:
        return {j["id"]: j for j in client.query("later:jobs")}


def runs(store: StoreProcess, name: str) -> int:
    with AdminClient(store.url, timeout=10) as client:
        n: int = client.query("later:runs", {"name": name})
        return n


def test_a_job_survives_a_restart_and_runs_once(tmp_path: Path) -> None:
    store = StoreProcess(
        tmp_path / "store.sqlite",
        functions="app_functions",
        pythonpath=[Path(__file__).parent],
        admin_key=ADMIN_KEY,
        log_path=tmp_path / "store.log",
    ).start()
    try:
        with AdminClient(store.url, timeout=10) as client:
            scheduled_at = time.time()
            job = client.mutation("later:schedule", {"name": "r", "seconds": 2.0})
            doomed = client.mutation("later:schedule", {"name": "c", "seconds": 1.5})
            client.mutation("later:cancel", {"id": doomed})
            answer = client.call("mutation", "later:schedule_then_fail", {"name": "f"})
            assert answer["status"] == "error"
            assert "failed after scheduling" in answer["errorMessage"]
        listed = jobs(store)
        assert listed[job]["state"] == "pending" and listed[job]["name"] == "later:record"
        assert listed[job]["args"] == [{"name": "r"}]
        assert listed[doomed]["state"] == "canceled"
        # The failed mutation's job was never written.
        assert {j["args"][0]["name"] for j in listed.values()} == {"r", "c"}

        store.stop()
        store.start()
        assert jobs(store)[job]["state"] == "pending" or runs(store, "r") == 1
        wait_until(lambda: jobs(store)[job]["state"] == "success")
        assert time.time() - scheduled_at >= 2.0
        assert runs(store, "r") == 1

        # Another restart does not run it again; the cancelled job never ran.
        store.stop()
        store.start()
        time.sleep(1.0)
        assert runs(store, "r") == 1 and runs(store, "c") == 0 and runs(store, "f") == 0
        states = {j["args"][0]["name"]: j["state"] for j in jobs(store).values()}
        assert states == {"r": "success", "c": "canceled"}
    finally:
        store.stop()
