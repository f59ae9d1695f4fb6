"""Helpers shared by the benchmark scripts: output, and a process's memory and CPU.

Processes, ports, percentiles and admin calls come from the test harness,
:mod:`marketpulse.testing`.

Every script prints a table and, as its last line, one JSON object with its figures
(``emit``); ``marketpulse bench`` collects that line.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import os
import queue
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
"""This folder: where the benchmarks' own functions modules (``sync_latency_app``) live."""
SRC = ROOT / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from marketpulse.testing import summarize_ms  # noqa: E402

console = Console(stderr=False, highlight=False, width=160)


def summarize_with_cpu(
    samples: dict[str, list[float]], cpu_s: dict[str, float], cpu_key: str
) -> dict[str, dict[str, float]]:
    """Per variant: :func:`summarize_ms` of its latencies plus its CPU µs per sample."""
    out = {}
    for name, values in samples.items():
        fig = summarize_ms(values)
        fig[cpu_key] = round(cpu_s[name] / len(values) * 1e6, 1)
        out[name] = fig
    return out


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a rich table."""
    table = Table(title=title)
    for header in headers:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*(f"{c:,.3f}" if isinstance(c, float) else str(c) for c in row))
    console.print(table)


FLEET_FLAGS = ("--max-connections-per-client", "0", "--max-connections", "0")
"""``serve`` flags for a store under a benchmark's client fleet: the whole fleet connects from one
address (127.0.0.1), which the per-address connection cap (1,000 by default) would refuse, and
10,000 clients fill the total cap (10,000 by default), which then refused the bench's own
``/metrics`` scrape."""


def cpu_times() -> list[int] | None:
    """The host's CPU time counters (``/proc/stat``'s ``cpu`` line, in ticks: user, nice,
    system, idle, iowait, irq, softirq, steal, ...), or None where there is no ``/proc``."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            return [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None


_RUN_STARTED = cpu_times()
"""The counters when this benchmark started (this module is imported first thing)."""


def cpu_shares(before: list[int] | None, after: list[int] | None) -> dict[str, float]:
    """Between two :func:`cpu_times` readings: the percent of the host's CPU time that was
    busy (user, system, interrupts) and that the hypervisor stole for other guests (a virtual
    machine's CPU that is ready to run but not given a core: it shows as lag off the CPU).
    Empty when either reading is missing."""
    if before is None or after is None:
        return {}
    delta = [b - a for a, b in zip(before, after, strict=False)][:8]
    if len(delta) < 8 or sum(delta) <= 0:
        return {}
    total = sum(delta)
    user, nice, system, _idle, _iowait, irq, softirq, steal = delta
    return {
        "busy_pct": round(100 * (user + nice + system + irq + softirq) / total, 1),
        "steal_pct": round(100 * steal / total, 1),
    }


def host_speed() -> dict[str, Any]:
    """This host's speed now: the Kalshi protocol core's deltas/s on one core (the
    ``kalshi_protocol`` bench's core figure, best of 2 on 10,000 deltas), so that figures
    from runs on a loaded or a different machine can be compared; and over the benchmark's
    run, the share of the CPU that was busy and that was stolen by other guests
    (:func:`cpu_shares`), taken before the speed test's own work."""
    from kalshi_protocol import bench_core

    shares = cpu_shares(_RUN_STARTED, cpu_times())
    core = bench_core(10_000, 2)
    return {
        "kalshi_core_deltas_per_s": round(core["core_deltas_per_s"]),
        "load_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "redis_parser": redis_parser(),
        **{f"run_{name}": value for name, value in shares.items()},
    }


def redis_parser() -> str:
    """How the Redis baseline's redis-py subscribers parse replies: ``"hiredis"`` (its C
    parser, the ``bench`` extra's) or ``"python"``, whose ~1.5x CPU per message makes a
    weaker baseline (bench/results/HISTORY.md, session 36)."""
    from redis.utils import HIREDIS_AVAILABLE

    return "hiredis" if HIREDIS_AVAILABLE else "python"


def emit(figures: dict[str, Any]) -> None:
    """Print the figures as the last line, one JSON object, with the host's speed."""
    figures.setdefault("host", host_speed())
    sys.stdout.flush()
    print(json.dumps(figures, default=str), flush=True)


# -- the store's event loop, from its /metrics -----------------------------------------------

LAG = "marketpulse_event_loop_lag_seconds"
LAG_OFF_CPU = "marketpulse_event_loop_lag_off_cpu_seconds"
LAG_ON_CPU = "marketpulse_event_loop_lag_on_cpu_seconds"
LAG_BLOCKED = "marketpulse_event_loop_lag_blocked_seconds"
_LAG_SERIES = (LAG, LAG_OFF_CPU, LAG_ON_CPU, LAG_BLOCKED)
GC_PAUSE = "marketpulse_gc_pause_seconds"
GC_CPU = "marketpulse_gc_pause_cpu_seconds"
GC_ANY = "gc_pause_any_generation"
"""Not a metric: :func:`scrape_loop`'s sum of every generation's pause buckets."""


_BUCKET = re.compile(r'^(\w+)_bucket\{(?:generation="(\d+)",)?le="([^"]+)"\} (\S+)$', re.M)
"""One histogram bucket line of the exposition format, as prometheus_client writes it."""


def scrape_loop(http: httpx.Client, store_url: str) -> dict[str, dict[float, float]]:
    """The store's cumulative loop-lag (and its parts off and on the CPU, and blocked) and gen-2
    GC pause (wall and CPU) buckets (upper bound s -> count), and the pauses of every generation
    together (``GC_ANY``).

    Light, since :class:`LoopSampler` calls it while the store is measured: the store renders
    only these series (``name[]``), and the bucket lines are read with one regular expression
    (0.08 ms for the 90 lines, against 1.6 ms through prometheus_client's parser).
    """
    out: dict[str, dict[float, float]] = {
        name: {} for name in (*_LAG_SERIES, GC_PAUSE, GC_CPU, GC_ANY)
    }
    names = [("name[]", f"{name}_bucket") for name in (*_LAG_SERIES, GC_PAUSE, GC_CPU)]
    page = http.get(f"{store_url}/metrics", params=names).text
    for name, generation, le_text, value_text in _BUCKET.findall(page):
        if name not in out:
            continue
        le, value = float(le_text), float(value_text)
        if name == GC_PAUSE:
            out[GC_ANY][le] = out[GC_ANY].get(le, 0.0) + value
        if name in _LAG_SERIES or generation == "2":
            out[name][le] = value
    return out


def bucket_quantile(buckets: dict[float, float], q: float) -> float:
    """The q-quantile (0-1) of a cumulative histogram, interpolated within its bucket as
    Prometheus' ``histogram_quantile`` does; NaN when empty."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bound: that bound is all we know
            return lower + (bound - lower) * ((rank - below) / max(count - below, 1e-12))
        lower, below = bound, count
    return lower


def _delta(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    return {le: after[le] - before.get(le, 0.0) for le in after}


def loop_summary(
    before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]
) -> dict[str, Any]:
    """Loop lag (p50/p99/p999, interpolated in the histogram's buckets, and the bucket the
    largest sample fell in), gen-2 GC pauses and the longest pause of any generation between
    two :func:`scrape_loop` scrapes."""
    lag = _delta(before[LAG], after[LAG])
    off_cpu = _delta(before.get(LAG_OFF_CPU, {}), after.get(LAG_OFF_CPU, {}))
    on_cpu = _delta(before.get(LAG_ON_CPU, {}), after.get(LAG_ON_CPU, {}))
    blocked = _delta(before.get(LAG_BLOCKED, {}), after.get(LAG_BLOCKED, {}))
    pauses = _delta(before[GC_PAUSE], after[GC_PAUSE])
    cpu = _delta(before[GC_CPU], after[GC_CPU])
    every = _delta(before.get(GC_ANY, {}), after.get(GC_ANY, {}))

    def top(buckets: dict[float, float]) -> float:
        # The upper bound of the highest bucket that gained a sample: max <= this (0: none).
        total = buckets.get(math.inf, 0.0)
        if not total:
            return 0.0
        for bound in sorted(buckets):
            if buckets[bound] >= total:
                return bound * 1000
        return math.inf

    return {
        "n": lag.get(math.inf, 0.0),
        "p50_ms": round(bucket_quantile(lag, 0.5) * 1000, 3),
        "p99_ms": round(bucket_quantile(lag, 0.99) * 1000, 3),
        "p999_ms": round(bucket_quantile(lag, 0.999) * 1000, 3),
        "max_le_ms": top(lag),
        # How much of the lag the loop's thread was not running (waiting for a core, or in a
        # blocking call): NaN from a store without the metric.
        "off_cpu_p99_ms": round(bucket_quantile(off_cpu, 0.99) * 1000, 3),
        "off_cpu_p999_ms": round(bucket_quantile(off_cpu, 0.999) * 1000, 3),
        # And how much the thread was running: the store's own long turns, apart from the host.
        "on_cpu_p99_ms": round(bucket_quantile(on_cpu, 0.99) * 1000, 3),
        "on_cpu_p999_ms": round(bucket_quantile(on_cpu, 0.999) * 1000, 3),
        # Of the part off the CPU, what was not a wait for a core: a blocking call, or the GIL
        # held by another of the store's threads (NaN from a store without the metric).
        "blocked_p99_ms": round(bucket_quantile(blocked, 0.99) * 1000, 3),
        "blocked_p999_ms": round(bucket_quantile(blocked, 0.999) * 1000, 3),
        "gc2_pauses": pauses.get(math.inf, 0.0),
        "gc2_max_le_ms": top(pauses),
        "gc2_cpu_max_le_ms": top(cpu),
        "gc_pauses": every.get(math.inf, 0.0),
        "gc_max_le_ms": top(every),
    }


class Background:
    """A coroutine (``_run``) running as a task between ``start()`` and ``stop()``."""

    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _sample_loop(store_url: str, every: float, out: Any, stop: Any) -> None:
    """:class:`LoopSampler`'s process: a :func:`loop_summary` every ``every`` s into ``out``."""
    with httpx.Client(timeout=10) as http:
        last = scrape_loop(http, store_url)
        while not stop.wait(every):
            now = scrape_loop(http, store_url)
            out.put({"at": time.time() * 1000, **loop_summary(last, now)})
            last = now
    out.put(None)  # the end of the series


class LoopSampler:
    """Scrapes the store's loop histograms every ``every`` s between :meth:`start` and
    :meth:`stop`: the lag over time, one :func:`loop_summary` per interval, stamped with its
    end (epoch ms).

    An observer with a cost, paid by the store alone (Redis's runs have nothing like it): at
    1,000 msgs/s, four scrapes a second from the benchmark's process took the npm client's
    p99 from 4.5-5.9 ms without it to 7.0-9.7 (alternated runs, HISTORY.md, session 25).
    The scrapes are lighter now (:func:`scrape_loop`) and come from a process of their own
    (the benchmark's runs the pipeline, whose batches waited while a scrape held its GIL), yet
    the store still answers each one, and its p99 still moved (4.5-8.9 ms). So latency.py
    samples only where the series is the figure: with the slow disk.
    """

    def __init__(self, store_url: str, every: float = 0.25) -> None:
        self.series: list[dict[str, Any]] = []
        context = multiprocessing.get_context("spawn")
        self._out = context.Queue()
        self._stop = context.Event()
        self._process = context.Process(
            target=_sample_loop, args=(store_url, every, self._out, self._stop), daemon=True
        )

    def start(self) -> None:
        self._process.start()

    async def stop(self) -> None:
        self._stop.set()
        # Read to the end before joining: a process exits only once its queue is drained. A
        # sampler that died (the store gone) sends no end: its series stops where it did.
        while True:
            try:
                entry = await asyncio.to_thread(self._out.get, True, 1.0)
            except queue.Empty:
                if self._process.is_alive():
                    continue
                break
            if entry is None:
                break
            self.series.append(entry)
        await asyncio.to_thread(self._process.join, 10)

    def between(self, start_ms: float, end_ms: float) -> list[dict[str, Any]]:
        return [p for p in self.series if start_ms <= p["at"] < end_ms]


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
