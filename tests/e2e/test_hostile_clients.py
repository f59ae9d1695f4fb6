"""Issue 16's table against a real ``marketpulse serve``: each hostile client is refused, times
out or is bounded, while the official PyPI client on another address keeps being pushed its
stamps on time and sees no error; memory is measured before, at peak and after.

Sizes are scaled down from the issue's (``MARKETPULSE_HOSTILE_SCALE``, default 0.1) except
where the size is the point; bench/hostile.py runs them full size and prints the figures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from marketpulse.testing import StoreProcess, percentile
from marketpulse.testing._hostile import (
    ATTACKS,
    HOSTILE_FUNCTIONS,
    AttackResult,
    Bystander,
    LowFdStore,
    run_attack,
)

pytest.importorskip("convex")

SCALE = float(os.environ.get("MARKETPULSE_HOSTILE_SCALE", "0.1"))
# Short timeouts, so the half-open row ends within seconds.
FLAGS = [
    "--header-timeout", "2", "--body-timeout", "2", "--connect-timeout", "2",
    "--message-timeout", "2", "--idle-timeout", "4",
    "--max-partial-bytes", str(64 * 1024 * 1024),
]  # fmt: skip
P99_BOUND_MS = 250.0
"""Generous: the issue's goal is 50 ms, measured (not asserted) by bench/hostile.py."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StoreProcess, Bystander]]:
    root = tmp_path_factory.mktemp("hostile")
    with (
        StoreProcess(
            root / "store.sqlite",
            functions=HOSTILE_FUNCTIONS,
            extra=FLAGS,
            env={"MARKETPULSE_LOG_LEVEL": "info"},
        ) as store,
        Bystander(store.url) as bystander,
    ):
        yield store, bystander


def check_bystander(result: AttackResult, bystander: Bystander, max_p99_ms: float) -> None:
    lat = result.latencies_ms
    assert len(lat) >= 3, f"{result.name}: the bystander got {len(lat)} pushes during the attack"
    assert percentile(lat, 50) <= 50.0, (result.name, percentile(lat, 50))
    assert percentile(lat, 99) <= max_p99_ms, (result.name, percentile(lat, 99))
    assert not bystander.errors and bystander.write_failures == 0


EXPECT = {
    "big_query_set": lambda d: d["over_cap_refused"] and d["at_cap_answered"],
    "half_open": lambda d: d["opened"] > 0 and d["still_open"] == 0,
    # Read although the client went on sending past the refusal (no reset ate it).
    "tiny_fragments": lambda d: d["error_received"],
    # Past the budget the server refuses: with an answer, or by cutting a sender off mid-frame.
    "unfinished_frames": lambda d: d["refused"] + d["cut"] >= 1,
    "utf8_message": lambda d: d["refused"],
    "big_bodies": lambda d: d["refused_413"] == 5,
    "huge_batch": lambda d: d["status"] == 400 and d["code"] == "TooManyQueries",
    "deep_nesting": lambda d: d["refused"] == max(1, int(50 * SCALE)),
    "slow_queries": lambda d: d["answered"] == max(1, int(20 * SCALE)) and d["health_s"] < 0.5,
    # Each commit re-ran it off the loop; its Transitions stayed in ts order, never mixed.
    "slow_subscription": lambda d: (
        d["updates"] >= d["rounds"] and d["mixed"] == 0 and d["ts_in_order"]
    ),
    "session_reuse": lambda d: d["first_succeeded"] and d["second_rejected"],
    "hostile_origins": lambda d: d["cors_headers_leaked"] == 0,
}
FULL_SIZE = {"utf8_message", "big_bodies", "huge_batch", "unfinished_frames", "session_reuse",
             "hostile_origins"}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_attack_leaves_the_bystander_alone(
    served: tuple[StoreProcess, Bystander], name: str
) -> None:
    store, bystander = served
    log_before = len(store.log())
    scale = 1.0 if name in FULL_SIZE else SCALE
    if name == "big_bodies":
        scale = 0.2  # 20 MB each: over the 8 MiB limit all the same
    if name == "unfinished_frames":
        scale = 0.25  # 10 x 15 MiB against a 64 MiB budget
    result = run_attack(store.pid, store.url, bystander, name, scale)
    assert "error" not in result.details, result.details
    assert EXPECT[name](result.details), result.details
    # Slow queries run off the event loop, and a batch is counted before it is parsed: the
    # same bound as every other row.
    check_bystander(result, bystander, P99_BOUND_MS)
    # Memory: bounded at peak, and back down after (generous; bench/hostile.py has figures).
    assert result.rss_peak_kib - result.rss_before_kib < 400 * 1024, result
    assert result.rss_after_kib - result.rss_before_kib < 150 * 1024, result
    if name == "unfinished_frames":
        # The refused frames' buffers are freed at once, not at the cyclic GC's next pass.
        held = result.rss_after_kib - result.rss_before_kib
        assert held < max(32 * 1024, (result.rss_peak_kib - result.rss_before_kib) // 3), result
    # No traceback per hostile message, no log flood.
    grown = store.log()[log_before:]
    assert "Traceback" not in grown and len(grown) < 200_000, grown[-2000:]


def test_idle_connections_at_the_fd_limit(tmp_path: Path) -> None:
    store = LowFdStore(
        tmp_path / "store.sqlite", functions=HOSTILE_FUNCTIONS, extra=FLAGS, fd_limit=1024
    ).start()
    try:
        with Bystander(store.url) as bystander:
            result = run_attack(store.pid, store.url, bystander, "idle_connections", 1.0)
            assert result.details["opened"] >= 1000, result.details
            assert result.details["refused"] > 0, "the cap refused the excess cheaply"
            check_bystander(result, bystander, P99_BOUND_MS)
        log = store.log()
        assert "connection cap lowered to fit the file-descriptor limit" in log
        # Throttled: a few lines per 10 s, not one per retry (230 MB in 40 s before).
        assert log.count("out of system resource") <= 10
        assert len(log) < 100_000
    finally:
        store.stop()


def test_every_row_of_the_table_is_covered() -> None:
    assert set(EXPECT) | {"idle_connections"} == set(ATTACKS)
