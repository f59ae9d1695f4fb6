"""bench/cluster.py's paced comparison in a tiny configuration: the SQLite node and the two
PostgreSQL nodes are measured in interleaved rounds, every round has both stores' samples, and
the ratio printed is the median of the rounds'."""

from __future__ import annotations

import statistics

import pytest

from .bench_run import run_bench

pytestmark = pytest.mark.e2e


def test_paced_rounds_interleave_both_stores(postgres_url: str) -> None:
    server = postgres_url.rsplit("/", 1)[0]  # the fixture skips when no server answers
    figures, stdout = run_bench(
        "cluster.py",
        *("--pg", server, "--rates", "40", "--rounds", "3", "--seconds", "1"),
        *("--calls", "0", "--groups", "0", "--compaction-seconds", "0"),
        timeout=300,
    )
    assert stdout.count("round ") >= 3  # each round printed as it ends
    f = figures["rate_40"]
    assert f["rounds"] == 3 and len(f["load_1m"]) == 3
    # 40 per round per store, every one acknowledged and seen on both PostgreSQL nodes.
    for key in ("sqlite_write", "sqlite_same_node", "pg_write", "pg_node_a", "pg_node_b"):
        assert f[key]["n"] == 3 * 40, key
    rounds = f["pg_vs_sqlite_write_p50_rounds"]
    assert len(rounds) == 3 and all(r > 0 for r in rounds)
    assert f["pg_vs_sqlite_write_p50"] == round(statistics.median(rounds), 2)
    assert len(f["cross_node_p50_ms_rounds"]) == 3
    assert 0 <= f["rounds_both_kept_up"] <= 3
