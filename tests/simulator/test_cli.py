"""``marketpulse simulate`` as a subprocess, driven over HTTP like the pipeline tests do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from marketpulse.kalshi import KalshiCredentials


def test_simulate_subprocess_prints_keys_and_obeys_control(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "marketpulse",
            "simulate",
            "--port",
            "0",
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
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = None
        for _ in range(20):
            line = proc.stdout.readline()
            if line.startswith("{"):
                ready = json.loads(line)
                break
        assert ready and ready["event"] == "simulator_ready"
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
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0


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
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "marketpulse",
            "simulate",
            "--port",
            "0",
            "--replay",
            str(rec),
            "--speed",
            "10",
            "--key-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = next(json.loads(ln) for ln in iter(proc.stdout.readline, "") if ln.startswith("{"))
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
        proc.terminate()
        proc.wait(timeout=10)
