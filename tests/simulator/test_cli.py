"""``marketpulse simulate`` as a subprocess, driven over HTTP like the pipeline tests do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from marketpulse.kalshi import KalshiCredentials
from marketpulse.testing import ManagedProcess


def ready_line(log: Path) -> dict[str, Any] | None:
    """The simulator's machine-readable ready line, once printed (whole)."""
    complete = (log.read_text() if log.exists() else "").split("\n")[:-1]
    return next((json.loads(line) for line in complete if line.startswith("{")), None)


def simulate(tmp_path: Path, *args: str) -> tuple[ManagedProcess, dict[str, Any]]:
    """``marketpulse simulate --port 0 ARGS``, once it has printed its ready line."""
    log = tmp_path / "simulate.log"
    argv = [sys.executable, "-m", "marketpulse", "simulate", "--port", "0", *args]
    proc = ManagedProcess("simulator", argv, log_path=log).start()
    proc.wait_ready(lambda: ready_line(log) is not None, 60, "printing its ready line")
    ready = ready_line(log)
    assert ready is not None
    return proc, ready


def test_simulate_subprocess_prints_keys_and_obeys_control(tmp_path: Path) -> None:
    proc, ready = simulate(
        tmp_path,
        "--markets",
        "4",
        "--rate",
        "500",
        "--seed",
        "3",
        "--key-dir",
        str(tmp_path),
        "--epoch-ms",
        "1795000000000",
    )
    try:
        assert ready["event"] == "simulator_ready"
        assert Path(ready["private_key_path"]).parent == tmp_path
        KalshiCredentials.from_file(ready["key_id"], ready["private_key_path"])  # loadable
        with httpx.Client(timeout=10) as http:
            markets = http.get(ready["rest_url"] + "/markets").json()["markets"]
            assert len(markets) == 4
            # seed + epoch fix the catalog: the same tickers as an in-process simulator
            from marketpulse.simulator import Simulator

            same = Simulator(markets=4, seed=3, epoch_ms=1_795_000_000_000)
            assert [m["ticker"] for m in markets] == list(same.markets)
            base = ready["rest_url"].removesuffix("/trade-api/v2")
            r = http.post(base + "/_sim/control", json={"action": "pause"})
            assert r.json() == {"ok": True, "result": None}
            assert (
                http.get(ready["rest_url"] + "/exchange/status").json()["trading_active"] is False
            )
            book = http.get(base + "/_sim/book/" + markets[0]["ticker"]).json()
            assert set(book) == {"yes", "no"}
    finally:
        assert proc.stop(10) == 0


def test_simulate_rejects_missing_replay_file(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "marketpulse", "simulate", "--replay", str(tmp_path / "nope.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "no such recording" in (r.stderr + r.stdout)


def test_simulate_replays_a_recording(tmp_path: Path) -> None:
    import time

    t = "KXTEST-26NOV24-T1"
    snap = {
        "type": "orderbook_snapshot",
        "sid": 1,
        "seq": 1,
        "msg": {"market_ticker": t, "no_dollars_fp": [["0.3000", "7.00"]]},
    }
    delta = {
        "type": "orderbook_delta",
        "sid": 1,
        "seq": 2,
        "msg": {"market_ticker": t, "price_dollars": "0.3100", "delta_fp": "2.25", "side": "no"},
    }
    rec = tmp_path / "rec.jsonl"
    rec.write_text(
        "\n".join(
            json.dumps({"ts_ms": ts, "frame": json.dumps(f)})
            for ts, f in ((0, snap), (1000, delta))
        )
        + "\n"
    )
    proc, ready = simulate(
        tmp_path,
        "--replay",
        str(rec),
        "--speed",
        "10",
        "--key-dir",
        str(tmp_path),
    )
    try:
        base = ready["rest_url"].removesuffix("/trade-api/v2")
        with httpx.Client(timeout=10) as http:
            assert http.get(base + "/_sim/markets").json()["markets"] == [t]
            deadline = time.monotonic() + 10
            book: dict[str, list[list[str]]] = {}
            while time.monotonic() < deadline:
                book = http.get(base + f"/_sim/book/{t}").json()
                if len(book["no"]) == 2:
                    break
                time.sleep(0.05)
            assert book == {"yes": [], "no": [["0.3000", "7.00"], ["0.3100", "2.25"]]}
    finally:
        proc.stop(10)
