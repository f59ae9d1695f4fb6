"""Write failures: SQLite's own words, and one log line per cause per interval."""

from __future__ import annotations

import sqlite3

from structlog.testing import capture_logs

from marketpulse.reactive.persistence._failures import FailureLog, describe
from marketpulse.reactive.persistence._identity import DatabaseState, Marker, judge
from marketpulse.reactive.persistence._watch import file_change


def test_describe_names_sqlites_error() -> None:
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorname = "SQLITE_FULL"  # type: ignore[attr-defined]
    assert describe(exc) == "database or disk is full (SQLITE_FULL)"
    assert describe(OSError("x")) == "x"


def test_a_cause_is_logged_once_per_interval_with_its_repeats() -> None:
    now = [0.0]
    failures = FailureLog("store write failed", interval=10.0, clock=lambda: now[0])
    with capture_logs() as logs:
        assert failures.report("full")
        assert not any(failures.report("full") for _ in range(99))
        assert failures.report("readonly")  # another cause has its own line
        now[0] = 10.0
        assert failures.report("full")
    assert [(e["cause"], e["repeated_since_last_line"]) for e in logs] == [
        ("full", 0),
        ("readonly", 0),
        ("full", 99),
    ]


def test_causes_remembered_are_bounded() -> None:
    failures = FailureLog("x")
    with capture_logs():
        for i in range(1000):
            failures.report(f"cause {i}")
    assert len(failures._seen) == FailureLog.MAX_CAUSES


def test_judge() -> None:
    m = Marker("a", 100)
    assert judge(None, DatabaseState(None, 0, -1)) is None  # first start
    assert judge(m, DatabaseState("a", 100, 4096)) is None
    assert judge(m, DatabaseState("a", 150, 4096)) is None  # the marker lags after a crash
    assert "missing" in (judge(m, DatabaseState(None, 0, -1)) or "")
    assert "empty" in (judge(m, DatabaseState(None, 0, 0)) or "")
    assert "holds no store" in (judge(m, DatabaseState(None, 0, 4096)) or "")
    assert "another store (b)" in (judge(m, DatabaseState("b", 500, 4096)) or "")
    assert "older than ts 100" in (judge(m, DatabaseState("a", 99, 4096)) or "")


def test_file_change() -> None:
    assert file_change("WAL", "w", None, (1, 2)) is None  # not there at start: nothing to compare
    assert file_change("WAL", "w", (1, 2), (1, 2)) is None
    assert "deleted" in (file_change("WAL", "w", (1, 2), None) or "")
    assert "replaced" in (file_change("WAL", "w", (1, 2), (1, 3)) or "")
