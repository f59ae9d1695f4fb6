"""The results renderer: tables of figure, goal and baseline, and the plots, from small fake
results."""

from __future__ import annotations

import json
from pathlib import Path

from marketpulse._bench_report import PLOTS, redis_fell_behind, render, summary_markdown

HOST = {"kalshi_core_deltas_per_s": 360456, "load_1m": 5.2, "cpus": 2}


def _latency_run(rate: float, ours_p50: float) -> dict[str, object]:
    ours = {"n": 100, "p50_ms": ours_p50, "p99_ms": ours_p50 * 3, "p999_ms": ours_p50 * 6}
    redis = {"n": 100, "p50_ms": 1.0, "p99_ms": 2.5, "p999_ms": 4.0}
    # The twin: one redis-py client on the official clients' markets. At 10,000 msgs/s the
    # fleet's p50 is over twice its twin's (the fleet fell behind); at 1,000 it is not.
    twin = {"n": 90, "p50_ms": 0.4 if rate == 10000 else 0.9, "p99_ms": 2.0, "p999_ms": 3.0}
    return {
        "rate": rate,
        "from_send": {
            "official_npm": ours,
            "redis": redis,
            **({"redis_watch": twin} if rate >= 1000 else {}),
        },
        "cdf": {
            "ours": [[0.5, ours_p50], [0.99, ours_p50 * 3], [1.0, ours_p50 * 6]],
            "redis": [[0.5, 1.0], [0.99, 2.5], [1.0, 4.0]],
        },
        "loop": {
            "p50_ms": 0.4,
            "p99_ms": 1.9,
            "p999_ms": 4.2,
            "on_cpu_p999_ms": 3.3,
            "gc2_max_le_ms": 5.0,
            **({"busy_pct": 88.0, "steal_pct": 12.5} if rate == 10000 else {}),
        },
        "query_probe": {"p99_ms": 3.0},
        **({"official_npm_own": {"n": 50, "p50_ms": 0.23, "p99_ms": 1.04}} if rate == 1000 else {}),
        **(
            {
                "book_age_at_send": {"n": 900, "p50_ms": 39.9, "p99_ms": 189.0},
                "book_write_interval": {"n": 880, "p50_ms": 133.6, "p99_ms": 410.0},
            }
            if rate == 10000
            else {}
        ),
        "longest_push_gap_ms": 12.0,
        "feed_longest_gap_ms": 11.0,
        "loop_series": [
            {"t_s": 0.25 * i, "p99_ms": 1.0 + i % 3, "max_le_ms": 2.0 + i % 3} for i in range(8)
        ],
    }


RESULTS = {
    "latency": {
        "host": HOST,
        "runs": [_latency_run(100, 2.0), _latency_run(1000, 3.5), _latency_run(10000, 9.0)],
    },
    "slow_disk": {
        "host": {**HOST, "run_busy_pct": 71.5, "run_steal_pct": 6.2, "redis_parser": "hiredis"},
        "slow_disk": {"stall_s": 0.3, "every_s": 2.0},
        "runs": [_latency_run(1000, 3.0)],
    },
    "fanout": {
        "runs": [
            {
                "clients": c,
                "ours": {"p99_ms": 9.0, "p999_ms": 20.0, "loop": {"p999_ms": 3.1}},
                "redis": {"p99_ms": 3.0},
            }
            for c in (1000, 10000)
        ]
    },
    "ingest": {
        "sustained_msgs_per_s": 20000,
        "seed_msgs_per_s": 300,
        "goals": {"goal_msgs_per_s": 20000},
        "steps": [{"offered": 5000.0, "mps": 4998.0}, {"offered": 20000.0, "mps": 19000.0}],
    },
    "sync_latency": {
        "subscribers": 1000,
        "p99_ms": 17.6,
        "baseline_p99_ms": 2.6,
        "redis_p99_ms": 8.8,
        "server_fanout_cpu_ms_per_commit": 20.0,
        "redis_cpu_ms_per_publish": 8.0,
    },
    "kalshi_protocol": {
        "core_deltas_per_s": 360456.9,
        "goal_core_deltas_per_s": 100000,
        "orjson_loads_per_s": 1698411.4,
    },
    "subscriptions_find": {"rows": [{"subs": 1000, "find_p50_us": 6.0, "linear_p50_us": 1600.0}]},
    "continuity": {
        "continuity": {
            "worker killed": {
                "this": [{"stale_as_live_s": 3.8, "trades_lost": 0}],
                "baseline": [{"stale_as_live_s": 11.2, "trades_lost": 74}],
            }
        }
    },
    "alerts": {"alerts_per_s": 1200.0, "goal_alerts_per_s": 1000, "runs": [1, 2]},
}


def test_each_figure_sits_beside_its_goal_and_baseline() -> None:
    text = summary_markdown(RESULTS, {"latency": "ran now: ok, 60.0 s"}, stamp="now")
    assert "| figure | ours | goal | baseline | ours / baseline |" in text
    assert "| 1,000 msgs/s, p50 | 3.5 ms | <= 2x Redis | Redis 1 ms | 3.50x |" in text
    assert (
        "| 10,000 msgs/s, p99 | 27 ms | <= 3x Redis | Redis, its subscribers behind, 2.5 ms "
        "| 10.80x |"
    ) in text
    assert (
        "| 10,000 msgs/s, p50 | 9 ms | <= 3x Redis | Redis, one client on the same markets "
        "0.4 ms | 22.50x |"
    ) in text
    assert (
        "| 1,000 msgs/s, p50 | 3.5 ms | <= 2x Redis | Redis, one client on the same markets "
        "0.9 ms | 3.89x |"
    ) in text
    assert "100 msgs/s, p50 | 2 ms |  | Redis, one" not in text  # a result without the twin
    assert "| 1,000 msgs/s, store loop lag p999 | 4.2 ms | <= 5 ms |  |  |" in text
    assert (
        "| 1,000 msgs/s, of ours, the npm client's own work p50 / p99 | 0.23 / 1.04 ms "
        "| (its message event -> onUpdate) |  |  |"
    ) in text
    assert "100 msgs/s, of ours" not in text  # results from before it was recorded
    assert (
        "| 10,000 msgs/s, of ours, each book's stamp age at pipeline send p50 / p99 "
        "| 39.9 / 189 ms | (the feed and the worker's backlog) |  |  |"
    ) in text
    assert "1,000 msgs/s, of ours, each book's" not in text
    assert (
        "| 10,000 msgs/s, of ours, a market's book sent every p50 / p99 | 134 / 410 ms "
        "| (how often it changes, or comes round) |  |  |"
    ) in text
    assert (
        "| 1,000 msgs/s, of that lag, the thread on the CPU p999 | 3.3 ms "
        "| (the store's own long turns) |  |  |"
    ) in text
    assert "| 10,000 msgs/s, host CPU busy, of it stolen by other guests | 88 %, 12.5 % |" in text
    assert "1,000 msgs/s, host CPU busy" not in text  # results from before it was recorded
    assert "| 1,000 msgs/s, largest gen-2 GC pause (CPU) <= | 5 ms (-) | a few ms |  |  |" in text
    assert (
        "| 1,000 msgs/s, longest gap between pushes | 12 ms |  | the feed's own: 11 ms |  |" in text
    )
    assert "| 10,000 clients, p99 | 9 ms | <= 3x Redis | Redis 3 ms | 3.00x |" in text
    assert "| 10,000 clients, store loop lag p999 | 3.1 ms | <= 5 ms |  |  |" in text
    assert "| offered 20,000 msgs/s | 19,000 achieved | = offered | offered 20,000 | 0.95x |" in (
        text
    )
    assert "| one commit -> 1000 subscribers, p99 | 17.6 ms | <= 20 ms |" in text
    assert (
        "| one commit -> 1000 subscribers, p99 | 17.6 ms |  | Redis pub/sub 8.8 ms | 2.00x |"
    ) in text
    assert "| server CPU per fan-out | 20 ms |  | Redis per PUBLISH 8 ms | 2.50x |" in (text)
    assert "| protocol core, deltas/s (one core) | 360,457 | >= 100,000 |" in text
    assert (
        "| find affected subscriptions, 1,000 subs, p50 | 6 us |  | linear scan 1,600 us | 0.0037x |"
        in (text)
    )
    assert "| worker killed: trades_lost | 0 |  | before 74 | 0.00x |" in text
    # Any other result: its numbers, a goal_<name> beside <name>; lists are left out.
    assert (
        "| alerts_per_s | 1,200 | 1,000 |  |  |" in text
        and "runs" not in text.split("(`alerts`)")[1]
    )
    assert "ran now: ok, 60.0 s; host: Kalshi core 360,456 deltas/s, load 5.2 on 2 CPUs" in text
    assert (
        "load 5.2 on 2 CPUs, CPU over the run 71.5 % busy, 6.2 % stolen by other guests; "
        "redis-py parser: hiredis"
    ) in text
    assert "host speed not recorded" in text  # fanout's fake result has none


def test_the_fleet_fell_behind_only_when_its_p50_is_over_twice_its_twins() -> None:
    def figures(fleet_p50: float, twin_p50: float | None) -> dict[str, object]:
        out: dict[str, object] = {"redis": {"n": 100, "p50_ms": fleet_p50}}
        if twin_p50 is not None:
            out["redis_watch"] = {"n": 100, "p50_ms": twin_p50}
        return out

    assert redis_fell_behind(figures(40.7, 13.4))
    assert not redis_fell_behind(figures(3.2, 2.1))  # a fast host at 10,000 msgs/s
    assert not redis_fell_behind(figures(2.0, 1.0))  # exactly twice: not over
    assert not redis_fell_behind(figures(40.7, None))  # results from before the twin


def test_render_writes_the_summary_and_every_plot(tmp_path: Path) -> None:
    for name, figures in RESULTS.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(figures))
    (tmp_path / "RUNS.json").write_text("{}")
    written = render(tmp_path, {}, "now")
    assert {p.name for p in written} == {"SUMMARY.md", *PLOTS}
    for plot in PLOTS:
        assert (tmp_path / plot).stat().st_size > 5000, plot
    assert "RUNS" not in (tmp_path / "SUMMARY.md").read_text()


def test_a_result_without_data_for_a_plot_writes_no_empty_plot(tmp_path: Path) -> None:
    (tmp_path / "fanout.json").write_text(json.dumps({"runs": []}))
    (tmp_path / "latency.json").write_text(json.dumps({"runs": [_latency_run(1000, 3.0)]}))
    written = {p.name for p in render(tmp_path)}
    # No 10,000 msgs/s run is fine (the CDF shows 1,000 alone); no fan-out runs: no plot.
    assert written == {"SUMMARY.md", "latency_vs_rate.png", "latency_cdf.png"}
