"""bench/cluster.py's paced comparison in a tiny configuration: the SQLite node and the two
PostgreSQL nodes are measured in interleaved rounds, every round has both stores' samples, and
the ratio printed is the median of the rounds'."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench" / "cluster.py"


def test_paced_rounds_interleave_both_stores(postgres_url: str) -> None:
    server = postgres_url.rsplit("/", 1)[0]  # the fixture skips when no server answers
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            *("--pg", server, "--rates", "40", "--rounds", "3", "--seconds", "1"),
            *("--calls", "0", "--groups", "0", "--compaction-seconds", "0"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("round ") >= 3  # each round printed as it ends
    f = json.loads(out.stdout.strip().splitlines()[-1])["rate_40"]
    assert f["rounds"] == 3 and len(f["load_1m"]) == 3
    # 40 per round per store, every one acknowledged and seen on both PostgreSQL nodes.
    for key in ("sqlite_write", "sqlite_same_node", "pg_write", "pg_node_a", "pg_node_b"):
        assert f[key]["n"] == 3 * 40, key
    rounds = f["pg_vs_sqlite_write_p50_rounds"]
    assert len(rounds) == 3 and all(r > 0 for r in rounds)
    assert f["pg_vs_sqlite_write_p50"] == round(statistics.median(rounds), 2)
    assert len(f["cross_node_p50_ms_rounds"]) == 3
    assert 0 <= f["rounds_both_kept_up"] <= 3
