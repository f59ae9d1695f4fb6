"""bench/compaction.py in a small configuration: two real ``serve`` nodes on PostgreSQL behind
HAProxy take the worker's batches back to back with a 1 s retention window, and the commit log
stays bounded while the commits go on: compaction deletes far more rows than the log holds,
the rows stay under the commit rate times the window, and the table's size stays within a few
times the commit bytes it holds (what compaction frees is reused)."""

from __future__ import annotations

import pytest

from .bench_run import run_bench

pytestmark = pytest.mark.e2e


def test_the_log_stays_bounded_while_commits_continue(postgres_url: str) -> None:
    server = postgres_url.rsplit("/", 1)[0]  # the fixture skips when no server answers
    figures, _ = run_bench(
        "compaction.py",
        *("--feed", "direct", "--pg", server, "--rate", "5000", "--markets", "20"),
        *("--seconds", "12", "--retention-s", "1", "--compact-interval-s", "0.5"),
        # Without the vacuum after each compaction the table grew to ~8x the commit bytes
        # it held over such a run; reused, at most ~2x (pages, the index, a compaction
        # interval's dead rows).
        *("--sample-s", "0.5", "--overhead", "3"),
        timeout=300,
    )
    steady = [s for s in figures["samples"] if s["t"] >= figures["window_s"]]
    assert len(steady) >= 6
    # Commits went on through the whole run...
    assert all(s["commits_per_s"] > 0 for s in steady)
    assert figures["batches_refused"] == 0
    # ...and compaction kept deleting: the log holds a small part of what was committed.
    assert figures["deleted"] >= figures["commits_made"] / 2
    assert all(s["rows"] <= figures["rows_bound"] for s in steady)
    assert all(s["oldest_age_s"] is None or s["oldest_age_s"] < 10 for s in steady)
    assert figures["size_to_held_max"] <= 3
    assert figures["bounded"] is True
