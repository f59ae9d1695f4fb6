"""The benchmark results as a person reads them: tables of figure, goal and baseline; plots.

:func:`render` reads the JSON results ``marketpulse bench`` keeps (``bench/results/*.json``,
one per script) and writes ``SUMMARY.md`` and the plots that answer the questions the
benchmarks ask (issue 15): latency percentiles against message rate, ours and Redis's;
latency CDFs at 1,000 and 10,000 msgs/s; fan-out p99 against clients; ingest achieved against
offered; the event loop's lag over time with an injected slow disk. A result missing from the
folder leaves its table and plot out. Nothing here runs a benchmark.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["PLOTS", "plot_results", "redis_fell_behind", "render", "summary_markdown"]

Row = tuple[str, str, str, str, str]
"""figure, ours, goal, baseline, ours/baseline."""

PLOTS = (
    "latency_vs_rate.png",
    "latency_cdf.png",
    "fanout_p99.png",
    "ingest.png",
    "loop_lag.png",
)
"""Every plot :func:`plot_results` can write (each needs its benchmark's result)."""


def _num(value: Any, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
        return f"{text} {unit}".strip()
    return str(value)


def _ratio(ours: Any, base: Any) -> str:
    numbers = isinstance(ours, int | float) and isinstance(base, int | float)
    if not numbers or not base or math.isnan(ours) or math.isnan(base):
        return "-"
    ratio = ours / base
    return f"{ratio:.2f}x" if ratio >= 0.01 or ratio == 0 else f"{ratio:.2g}x"


def _vs(figure: str, ours: Any, goal: str, base_name: str, base: Any, unit: str = "ms") -> Row:
    """One row: a figure of ours beside its goal and a named baseline, and their ratio."""
    return (figure, _num(ours, unit), goal, f"{base_name} {_num(base, unit)}", _ratio(ours, base))


def _table(rows: Iterable[Row]) -> list[str]:
    out = ["| figure | ours | goal | baseline | ours / baseline |", "|---|---|---|---|---|"]
    out += [f"| {' | '.join(row)} |" for row in rows]
    return out


# -- one table per benchmark ----------------------------------------------------------------

_PCTS = (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p999"))
_RATE_GOALS = {1000: ("<= 2x Redis", "<= 3x Redis", "<= 5x Redis"), 10000: ("<= 3x Redis",) * 2}
"""Issue 15's goals at 1,000 msgs/s (p50, p99, p999) and 10,000 msgs/s (p50, p99)."""


_LAG_PARTS = (
    ("off_cpu", "the thread off the CPU", "(waiting for a core, or blocked)"),
    ("blocked", "the thread blocked", "(off the CPU, not waiting for a core)"),
    ("on_cpu", "the thread on the CPU", "(the store's own long turns)"),
)
"""The parts of the loop's lag the store exports, as (key, name, what it means)."""


FLEET_BEHIND = 2.0
"""Redis's subscriber fleet fell behind when its p50 is over this multiple of its twin's."""


def redis_fell_behind(from_send: dict[str, Any]) -> bool:
    """Whether, in one rate's figures (a latency run's ``from_send``), Redis's subscriber fleet
    fell behind the feed: its p50 over :data:`FLEET_BEHIND` times that of its twin, the one
    redis-py client in a process of its own on the official clients' markets.

    The fleet's two processes take every change of every market; once they cannot keep up
    (10,000 msgs/s on a slow host), its figures measure their queue, not Redis, and a ratio
    against them flatters ours. The twin gets the same messages as the clients it shadows and
    keeps up. On a host that keeps up the two are within ~1.5x of each other at every rate.
    """
    fleet, twin = from_send.get("redis") or {}, from_send.get("redis_watch") or {}
    if not fleet.get("n") or not twin.get("n") or not twin.get("p50_ms"):
        return False
    return bool(fleet["p50_ms"] > FLEET_BEHIND * twin["p50_ms"])


def _latency_client(run: dict[str, Any]) -> dict[str, Any]:
    """Our figure at one rate: the npm ConvexClient from the send log (the light clients when
    node was missing)."""
    exact = run.get("from_send", {})
    for name in ("official_npm", "official", "light"):
        fig = exact.get(name) or run.get(name)
        if fig and fig.get("n"):
            return dict(fig)
    return {}


_LATENCY_PARTS = (
    ("official_npm_own", "the npm client's own work", "(its message event -> onUpdate)"),
    (
        "book_age_at_send",
        "each book's stamp age at pipeline send",
        "(the feed and the worker's backlog)",
    ),
    ("book_write_interval", "a market's book sent every", "(how often it changes, or comes round)"),
)
"""Figures of ours that explain a rate's latency, shown under it: (result key, what, note)."""


def _latency_rows(res: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for run in res.get("runs", []):
        at = f"{run['rate']:,.0f} msgs/s"
        ours = _latency_client(run)
        exact = run.get("from_send", {})
        redis = exact.get("redis") or run.get("redis", {})
        goals = _RATE_GOALS.get(int(run["rate"]), ())
        merged = exact.get("redis_coalesced") or {}
        twin = exact.get("redis_watch") or {}
        fleet = "Redis, its subscribers behind," if redis_fell_behind(exact) else "Redis"
        for i, (key, label) in enumerate(_PCTS):
            goal = goals[i] if i < len(goals) else ""
            rows.append(_vs(f"{at}, {label}", ours.get(key), goal, fleet, redis.get(key)))
            if twin.get("n"):
                # The like-for-like one: a client in a process of its own on the same markets.
                rows.append(
                    _vs(
                        f"{at}, {label}",
                        ours.get(key),
                        goal,
                        "Redis, one client on the same markets",
                        twin.get(key),
                    )
                )
            if merged:
                # The same goal against Redis publishing only each market's newest change.
                rows.append(
                    _vs(
                        f"{at}, {label}",
                        ours.get(key),
                        goal,
                        "Redis coalesced like ours",
                        merged.get(key),
                    )
                )
        # Recorded since sessions 27 and 31: older results lack them.
        for key, part, note in _LATENCY_PARTS:
            fig = run.get(key) or {}
            if fig.get("n"):
                rows.append(
                    (
                        f"{at}, of ours, {part} p50 / p99",
                        f"{_num(fig['p50_ms'])} / {_num(fig['p99_ms'], 'ms')}",
                        note,
                        "",
                        "",
                    )
                )
        loop = run.get("loop") or {}
        if loop:
            gc_wall, gc_cpu = loop.get("gc2_max_le_ms"), loop.get("gc2_cpu_max_le_ms")
            probe = run.get("query_probe") or {}
            # Recorded since session 14; older results have no such row.
            cpu: list[Row] = (
                [
                    (
                        f"{at}, host CPU busy, of it stolen by other guests",
                        f"{_num(loop['busy_pct'])} %, {_num(loop.get('steal_pct'))} %",
                        "",
                        "",
                        "",
                    )
                ]
                if "busy_pct" in loop
                else []
            )
            rows += [
                (f"{at}, store loop lag p999", _num(loop.get("p999_ms"), "ms"), "<= 5 ms", "", ""),
                *(
                    (
                        f"{at}, of that lag, {name} p999",
                        _num(loop.get(f"{key}_p999_ms"), "ms"),
                        why,
                        "",
                        "",
                    )
                    for key, name, why in _LAG_PARTS
                    if f"{key}_p999_ms" in loop  # blocked: recorded since session 29
                ),
                *cpu,
                (
                    f"{at}, largest gen-2 GC pause (CPU) <=",
                    f"{_num(gc_wall, 'ms')} ({_num(gc_cpu, 'ms')})",
                    "a few ms",
                    "",
                    "",
                ),
                (f"{at}, HTTP query p99", _num(probe.get("p99_ms"), "ms"), "", "", ""),
                (
                    f"{at}, longest gap between pushes",
                    _num(run.get("longest_push_gap_ms"), "ms"),
                    "",
                    (
                        f"the feed's own: {_num(run['feed_longest_gap_ms'], 'ms')}"
                        if run.get("feed_longest_gap_ms") is not None
                        else ""
                    ),
                    "",
                ),
            ]
    return rows


def _fanout_rows(res: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for run in res.get("runs", []):
        ours, redis = run.get("ours", {}), run.get("redis", {})
        n = f"{run['clients']:,} clients"
        for key, label, goal in (
            ("p99_ms", "p99", "<= 3x Redis"),
            ("p999_ms", "p999", "<= 100 ms"),
        ):
            rows.append(_vs(f"{n}, {label}", ours.get(key), goal, "Redis", redis.get(key)))
        if ours.get("loop"):
            lag = _num(ours["loop"].get("p999_ms"), "ms")
            rows.append((f"{n}, store loop lag p999", lag, "<= 5 ms", "", ""))
    return rows


def _ingest_rows(res: dict[str, Any]) -> list[Row]:
    goal = res.get("goals", {}).get("goal_msgs_per_s")
    rows: list[Row] = [
        _vs(
            "sustained msgs/s",
            res.get("sustained_msgs_per_s"),
            f">= {_num(goal)}" if goal else "",
            "seed writer",
            res.get("seed_msgs_per_s"),
            unit="",
        )
    ]
    for step in res.get("steps", []):
        offered = step["offered"]
        row = _vs(
            f"offered {_num(offered)} msgs/s", step.get("mps"), "= offered", "offered", offered, ""
        )
        rows.append((row[0], f"{row[1]} achieved", *row[2:]))
    return rows


def _sync_latency_rows(res: dict[str, Any]) -> list[Row]:
    loop = res.get("loop") or {}
    lag = [("store loop lag p999", _num(loop.get("p999_ms"), "ms"), "<= 5 ms", "", "")]
    fanout = f"one commit -> {res.get('subscribers', '?')} subscribers"
    rows = [
        _vs(
            f"{fanout}, {label}",
            res.get(key),
            "<= 20 ms" if key == "p99_ms" else "",
            "1 subscriber",
            res.get("baseline_" + key),
        )
        for key, label in _PCTS[:2]
    ]
    if res.get("redis_p99_ms") is not None:
        rows += [
            _vs(f"{fanout}, {label}", res.get(key), "", "Redis pub/sub", res.get("redis_" + key))
            for key, label in _PCTS[:2]
        ]
    if res.get("redis_cpu_ms_per_publish") is not None:
        cpu = res.get("server_fanout_cpu_ms_per_commit")
        base = res.get("redis_cpu_ms_per_publish")
        rows.append(_vs("server CPU per fan-out", cpu, "", "Redis per PUBLISH", base))
    return (lag if loop else []) + rows


def _kalshi_rows(res: dict[str, Any]) -> list[Row]:
    goal = f">= {_num(res.get('goal_core_deltas_per_s'))}"
    return [
        _vs(
            "protocol core, deltas/s (one core)",
            res.get("core_deltas_per_s"),
            goal,
            "bare orjson.loads",
            res.get("orjson_loads_per_s"),
            unit="",
        ),
        _vs(
            "feed over loopback, frames/s",
            res.get("feed_frames_per_s"),
            "",
            "bare websockets",
            res.get("bare_websockets_frames_per_s"),
            unit="",
        ),
    ]


def _pipeline_rows(res: dict[str, Any]) -> list[Row]:
    return [
        _vs(
            "pipeline msgs/s",
            res.get("pipeline_msgs_per_s"),
            "",
            "seed design",
            res.get("seed_msgs_per_s"),
            unit="",
        ),
        *(
            (f"latency {label}", _num(res.get(f"latency_{label}_ms"), "ms"), "", "", "")
            for label in ("p50", "p99", "max")
        ),
    ]


def _apply_rows(res: dict[str, Any]) -> list[Row]:
    live, base = res.get("live", {}), res.get("baseline", {})
    subs = live.get("subscriptions", "?")
    return [
        _vs(
            f"applyUpdates commit {label}, {subs} subscriptions",
            live.get(f"commit_{label}_ms"),
            "",
            "no subscriptions",
            base.get(f"commit_{label}_ms"),
        )
        for label in ("p50", "p99")
    ]


def _dashboard_rows(res: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for source, what in (("dev", "the whole system"), ("serve", "store and browser")):
        for pct in ("p50", "p99"):
            ours = res.get(f"{source}_dom_{pct}_ms")
            if ours is not None:
                base = res.get(f"{source}_client_{pct}_ms")
                rows.append(
                    _vs(
                        f"{source} ({what}), trade -> browser DOM, {pct}",
                        ours,
                        "",
                        "PyPI client receipt",
                        base,
                    )
                )
    return rows


_PUSH_FIGURES = (
    ("commit_cpu_us", "store CPU per step, commit and re-runs", "µs"),
    ("fanout_cpu_us", "store CPU per step, fan-out encoding", "µs"),
    ("bytes_per_viewer", "bytes pushed per step to each viewer", "B"),
)


def _pushes_rows(res: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for name, scenario in res.get("scenarios", {}).items():
        old_name, new_name = scenario.get("layouts", ("?", "?"))
        old, new = scenario["figures"].get(old_name, {}), scenario["figures"].get(new_name, {})
        goal = f"<= {res.get('goal_ratio', '?')}x {old_name}"
        goals = res.get("goals", ())
        rows += [
            _vs(
                f"{name}, {label} ({new_name})",
                new.get(key),
                goal if key in goals else "",
                old_name,
                old.get(key),
                unit,
            )
            for key, label, unit in _PUSH_FIGURES
        ]
    return rows


def _codec_rows(res: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for shape, f in res.get("shapes", {}).items():
        packed, lists = f.get("packed", {}), f.get("lists", {})
        for side, steps in (
            ("worker", ("render_us", "encode_us")),
            ("store", ("decode_us", "check_us")),
        ):
            ours = sum(packed.get(k, math.nan) for k in steps)
            base = sum(lists.get(k, math.nan) for k in steps)
            rows.append(
                _vs(f"{shape}: {side} CPU per batch", ours, "", "books as lists", base, "µs")
            )
    return rows


def _scrape_rows(res: dict[str, Any]) -> list[Row]:
    """Each run of this store beside the same round's baseline store (``--before``), if any."""
    this = res.get("runs", {}).get("this", [])
    before = res.get("runs", {}).get("before") or [{}] * len(this)
    goal = f"<= {res.get('goal_p999_ms', '?')}"
    return [
        _vs(
            f"loop lag under {run.get('scrapes_per_s', '?')} scrapes/s, {pct}, run {i + 1}",
            run.get(f"lag_{pct}_ms"),
            goal if pct == "p999" else "",
            "before",
            base.get(f"lag_{pct}_ms"),
        )
        for i, (run, base) in enumerate(zip(this, before, strict=True))
        for pct in ("p99", "p999")
    ]


def _simulator_rows(res: dict[str, Any]) -> list[Row]:
    return [
        _vs(
            "simulator, best sustained msgs/s",
            res.get("sim_best_sustained_msgs_per_s"),
            "",
            "raw send",
            res.get("baseline_raw_send_msgs_per_s"),
            unit="",
        )
    ]


def _find_rows(res: dict[str, Any]) -> list[Row]:
    return [
        _vs(
            f"find affected subscriptions, {row['subs']:,} subs, p50",
            row.get("find_p50_us"),
            "",
            "linear scan",
            row.get("linear_p50_us"),
            unit="us",
        )
        for row in res.get("rows", [])
    ]


def _growth_rows(res: dict[str, Any]) -> list[Row]:
    return [
        _vs(
            f"{mode}, {run.get('level', '?')}x: {run.get('clients', '?')} clients, p99",
            run.get("ours", {}).get("p99_ms"),
            "",
            "Redis",
            run.get("redis", {}).get("p99_ms"),
        )
        for mode, body in res.get("modes", {}).items()
        for run in body.get("runs", [])
    ]


def _continuity_rows(res: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for scenario, sides in res.get("continuity", {}).items():
        this = (sides.get("this") or [{}])[0]
        base = (sides.get("baseline") or [{}])[0]
        for key, unit in (("stale_as_live_s", "s"), ("trades_lost", "")):
            rows.append(_vs(f"{scenario}: {key}", this.get(key), "", "before", base.get(key), unit))
    return rows


def _generic_rows(res: dict[str, Any]) -> list[Row]:
    """Any other result: its top-level numbers, a ``goal_<name>`` beside ``<name>``, a
    ``baseline_<name>`` (or ``redis_<name>``) as its baseline."""
    rows: list[Row] = []
    for key, value in res.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if key.startswith(("goal_", "baseline_", "redis_")) or key.endswith("_goal"):
            continue
        goal = res.get(f"goal_{key}", res.get(f"{key}_goal"))
        base = res.get(f"baseline_{key}", res.get(f"redis_{key}"))
        rows.append(
            (
                key,
                _num(value),
                _num(goal) if goal is not None else "",
                _num(base) if base is not None else "",
                _ratio(value, base) if base is not None else "",
            )
        )
    return rows


TABLES: dict[str, tuple[str, Callable[[dict[str, Any]], list[Row]]]] = {
    "latency": ("Latency, simulator send -> npm ConvexClient, beside Redis", _latency_rows),
    "slow_disk": ("Latency at 1,000 msgs/s with a slow disk injected", _latency_rows),
    "fanout": ("Fan-out, one market update -> every subscribed client", _fanout_rows),
    "ingest": ("Ingest: messages/s achieved against offered", _ingest_rows),
    "sync_latency": ("One commit -> 1,000 subscribers of one query", _sync_latency_rows),
    "kalshi_protocol": ("Kalshi protocol core and feed (the host's speed)", _kalshi_rows),
    "pipeline_throughput": ("The pipeline against the seed's design", _pipeline_rows),
    "marketdata_apply": ("applyUpdates with and without subscriptions", _apply_rows),
    "batch_codec": ("One applyUpdates batch encoded and checked, books packed", _codec_rows),
    "dashboard_latency": (
        "Dashboard: a trade from its source to the browser's DOM",
        _dashboard_rows,
    ),
    "dashboard_pushes": (
        "The dashboard's chart and market list: the store's cost per tick",
        _pushes_rows,
    ),
    "metrics_scrape": ("The store's loop lag under /metrics scrapes alone", _scrape_rows),
    "simulator_rate": ("The simulator's send rate", _simulator_rows),
    "subscriptions_find": ("Finding the subscriptions a commit affects", _find_rows),
    "growth": ("Fan-out as markets and clients grow", _growth_rows),
    "continuity": ("Faults of worker, feed, store and Temporal", _continuity_rows),
}


def _host(res: dict[str, Any]) -> str:
    host = res.get("host")
    sized = (
        f"{res['subscribers']:,} subscribers; " if isinstance(res.get("subscribers"), int) else ""
    )
    if not isinstance(host, dict):
        return sized + "host speed not recorded"
    shares = (
        f", CPU over the run {_num(host['run_busy_pct'])} % busy, "
        f"{_num(host.get('run_steal_pct'))} % stolen by other guests"
        if "run_busy_pct" in host
        else ""
    )
    parser = host.get("redis_parser")
    return sized + (
        f"host: Kalshi core {_num(host.get('kalshi_core_deltas_per_s'))} deltas/s, "
        f"load {_num(host.get('load_1m'))} on {host.get('cpus', '?')} CPUs{shares}"
        + (f"; redis-py parser: {parser}" if parser else "")
    )


def summary_markdown(
    results: dict[str, dict[str, Any]],
    notes: dict[str, str] | None = None,
    stamp: str = "",
) -> str:
    """The summary: per benchmark, a table of each figure beside its goal and baseline.

    Args:
        results: figures by benchmark name (the JSON file's stem).
        notes: a line per benchmark (its status and date), shown under its heading.
        stamp: when the summary was written.
    """
    notes = notes or {}
    lines = ["# Benchmark results", ""]
    if stamp:
        lines += [f"Written {stamp}. Plots: " + ", ".join(f"`{p}`" for p in PLOTS) + ".", ""]
    ordered = [n for n in TABLES if n in results] + sorted(set(results) - set(TABLES))
    for name in ordered:
        res = results[name]
        title, rows_of = TABLES.get(name, (name, _generic_rows))
        lines += [f"## {title} (`{name}`)", ""]
        lines += [f"{notes[name]}; {_host(res)}" if name in notes else _host(res), ""]
        rows = rows_of(res)
        lines += _table(rows) if rows else ["(no figures)"]
        lines.append("")
    missing = sorted(set(notes) - set(results))
    for name in missing:
        lines += [f"## `{name}`", "", notes[name], ""]
    return "\n".join(lines)


# -- plots ----------------------------------------------------------------------------------


def _axes(ax: Any, title: str, xlabel: str, ylabel: str, log: str = "") -> None:
    """Title, labels, grid and legend of one plot; ``log`` names the log-scaled axes."""
    if "x" in log:
        ax.set_xscale("log")
    if "y" in log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _save(plt: Any, fig: Any, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _latency_vs_rate(plt: Any, res: dict[str, Any], path: Path) -> bool:
    runs = sorted(res.get("runs", []), key=lambda r: r["rate"])
    if not any(_latency_client(r) for r in runs):
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, style in (("p50_ms", ":"), ("p99_ms", "-"), ("p999_ms", "--")):
        rates = [r["rate"] for r in runs]
        ours = [_latency_client(r).get(key, math.nan) for r in runs]
        redis = [
            (r.get("from_send", {}).get("redis") or r.get("redis", {})).get(key, math.nan)
            for r in runs
        ]
        merged = [
            r.get("from_send", {}).get("redis_coalesced", {}).get(key, math.nan) for r in runs
        ]
        label = key.removesuffix("_ms")
        ax.plot(rates, ours, style, marker="o", color="#2563eb", label=f"marketpulse {label}")
        ax.plot(rates, redis, style, marker="s", color="#dc2626", label=f"Redis {label}")
        if not all(math.isnan(m) for m in merged):
            ax.plot(
                rates, merged, style, marker="^", color="#f59e0b", label=f"Redis coalesced {label}"
            )
    _axes(
        ax,
        "Latency percentiles against message rate",
        "offered messages/s",
        "latency, send -> receipt (ms)",
        log="xy",
    )
    return _save(plt, fig, path)


def _latency_cdf(plt: Any, res: dict[str, Any], path: Path) -> bool:
    runs = [r for r in res.get("runs", []) if int(r["rate"]) in (1000, 10000) and r.get("cdf")]
    if not runs:
        return False
    fig, axes = plt.subplots(1, max(len(runs), 1), figsize=(6 * max(len(runs), 1), 4.5))
    axes = list(axes) if hasattr(axes, "__len__") else [axes]
    for ax, run in zip(axes, runs, strict=False):
        colors = (("ours", "#2563eb"), ("redis", "#dc2626"), ("redis_coalesced", "#f59e0b"))
        for name, color in colors:
            points = run["cdf"].get(name) or []
            if points:
                ax.plot([ms for _, ms in points], [q for q, _ in points], color=color, label=name)
        title = f"{run['rate']:,.0f} msgs/s"
        _axes(ax, title, "latency (ms)", "fraction of updates received within", log="x")
    fig.suptitle("Latency CDF, marketpulse (npm client) and Redis, same run")
    return _save(plt, fig, path)


def _fanout_p99(plt: Any, res: dict[str, Any], path: Path) -> bool:
    runs = sorted(res.get("runs", []), key=lambda r: r["clients"])
    if not runs:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    clients = [r["clients"] for r in runs]
    for side, color in (("ours", "#2563eb"), ("redis", "#dc2626")):
        label = "marketpulse" if side == "ours" else "Redis"
        ax.plot(clients, [r[side]["p99_ms"] for r in runs], marker="o", color=color, label=label)
    _axes(ax, "Fan-out p99 against clients", "subscribed clients", "p99 latency (ms)", log="xy")
    return _save(plt, fig, path)


def _ingest(plt: Any, res: dict[str, Any], path: Path) -> bool:
    steps = sorted(res.get("steps", []), key=lambda s: s["offered"])
    if not steps:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    offered = [s["offered"] for s in steps]
    ax.plot(offered, offered, ":", color="grey", label="achieved = offered")
    ax.plot(offered, [s.get("mps", math.nan) for s in steps], marker="o", label="achieved")
    goal = res.get("goals", {}).get("goal_msgs_per_s")
    if goal:
        ax.axvline(goal, color="#16a34a", alpha=0.5, label=f"goal {goal:,.0f}/s")
    _axes(ax, "Ingest achieved against offered", "offered messages/s", "achieved messages/s")
    return _save(plt, fig, path)


def _loop_lag(plt: Any, res: dict[str, Any], path: Path) -> bool:
    if not any(run.get("loop_series") for run in res.get("runs", [])):
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    disk = res.get("slow_disk", {})
    for run in res.get("runs", []):
        series = run.get("loop_series", [])
        t = [p["t_s"] for p in series]
        ax.step(t, [max(p["max_le_ms"], 0.1) for p in series], where="post", label="largest <=")
        ax.plot(t, [max(p["p99_ms"], 0.1) for p in series], ".", label="p99")
    ax.axhline(5, color="#16a34a", alpha=0.6, label="goal p999 5 ms")
    stall = disk.get("stall_s", 0)
    what = f"disk stalls {stall:g} s every {disk.get('every_s', 0):g} s" if stall else "no stall"
    title = f"Store event-loop lag over time ({what})"
    _axes(ax, title, "s into the 1,000 msgs/s window", "event-loop lag per 0.25 s (ms)", log="y")
    return _save(plt, fig, path)


_PLOTTERS: dict[str, tuple[str, Callable[[Any, dict[str, Any], Path], bool]]] = {
    "latency_vs_rate.png": ("latency", _latency_vs_rate),
    "latency_cdf.png": ("latency", _latency_cdf),
    "fanout_p99.png": ("fanout", _fanout_p99),
    "ingest.png": ("ingest", _ingest),
    "loop_lag.png": ("slow_disk", _loop_lag),
}


def plot_results(results: dict[str, dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write each plot of :data:`PLOTS` whose result is present; returns the files written
    (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the command checks for the bench extra; plots are a bonus here
        return []
    written = []
    for filename, (name, plot) in _PLOTTERS.items():
        path = out_dir / filename
        if name in results and plot(plt, results[name], path):
            written.append(path)
    return written


def render(out_dir: Path, notes: dict[str, str] | None = None, stamp: str = "") -> list[Path]:
    """Read every ``*.json`` result in ``out_dir`` and write ``SUMMARY.md`` and the plots;
    returns the files written."""
    results = {
        path.stem: json.loads(path.read_text())
        for path in sorted(out_dir.glob("*.json"))
        if path.name != "RUNS.json"
    }
    summary = out_dir / "SUMMARY.md"
    summary.write_text(summary_markdown(results, notes, stamp))
    return [summary, *plot_results(results, out_dir)]
