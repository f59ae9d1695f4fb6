"""The commit log of a PostgreSQL cluster under a fast feed: compaction keeps it bounded.

``--feed pipeline`` (the default) is the real path, as in tests/e2e/test_pipeline_cluster.py:
``marketpulse simulate`` (``--markets`` markets) → the Temporal stream worker (it coalesces the
feed into one ``applyUpdates`` batch at a time) → HAProxy → ``--nodes`` ``serve`` nodes on one
PostgreSQL database, with the store's ``retention_s`` and ``compact_interval_s`` on the URL.
Once the first markets have a book, the simulator is set to ``--rate`` msg/s (default 50,000)
for ``--seconds``.

``--feed direct`` is for a host where that pipeline cannot take ``--rate`` (the simulator and
the worker need about a core each at 50,000 msg/s): the same nodes behind the same balancer
get the batches the worker would write at ``--rate``, from one connection, each sent when the
previous one is answered, as the worker does. A batch stands for the feed that arrived during
the previous batch's round trip, ``rate × dt`` messages: coalesced, that is every market's book
and ticker (the simulator's own model, run in process first, says how many markets such a
window touches and what share of its messages are trades) and each trade on its own, at most
1,000 a batch with at most 20,000 waiting and the oldest dropped past that (the worker's
coalescer's bounds). The store side, its commits and their bodies are then those of a
``--rate`` feed; "consumed" counts the messages whose content reached the store (all but the
trades still waiting or dropped).

Every ``--sample-s`` it prints the ``commits`` table's rows and its size
(``pg_total_relation_size``, so with its TOAST table and index), its dead rows, the age of its
oldest commit, the ``documents`` table's rows and size, the commits made since the last sample,
and the feed offered and consumed per second.

Bounded means: once the retention window, a compaction interval and a heartbeat have passed
(``retention_s + 2 × compact_interval_s + 1 s``), the rows stay under the commit rate times
that window (×1.5, for the rate's swings), more commits were deleted than the log holds, and
the table's size stays within ``--overhead`` (2×) of the most commit bytes it has held (the
bodies as stored, ``pg_column_size``): what is deleted is reused, not piled up beside them,
while commits go on. (Its size alone may grow with the commit rate, as a machine's load eases.)

``--before SRC`` runs the nodes (and everything else started) on another checkout's code, for
a same-host before/after.

Needs PostgreSQL (``--pg``; a database is created and dropped) and HAProxy; the pipeline feed
also the Temporal CLI.

    python bench/compaction.py [--feed pipeline|direct] [--seconds 110] [--rate 50000]
        [--nodes 2] [--retention-s 30] [--compact-interval-s 5] [--before SRC] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg

from _batches import book
from _common import emit, print_table
from cluster import database
from marketpulse.reactive.sync.client import LightSyncClient
from marketpulse.simulator._catalog import build_catalog
from marketpulse.simulator._model import ExchangeModel
from marketpulse.testing import LocalSystem
from pipeline_throughput import worker_counter

FEED_COUNTER = "marketpulse_stream_feed_messages_total"
BATCH_COUNTER = "marketpulse_stream_batches_total"
GOAL_RATE = 50_000.0
SLACK = 1.5
HEARTBEAT_S = 1.0  # how often a node records its position (PostgresPersistence's default)
# The worker's coalescer's bounds (src/marketpulse/pipeline/_coalesce.py).
TRADES_PER_BATCH = 1_000
TRADES_PENDING = 20_000


def _say(what: str) -> None:
    print(f"[compaction] {what}", file=sys.stderr, flush=True)


Counters = Callable[[], Awaitable[tuple[float, float, float]]]
"""The feed's cumulative (offered, consumed, batches written)."""

_SIZES = """
SELECT (SELECT count(*) FROM commits) AS rows,
       (SELECT min(ts) FROM commits) AS oldest,
       pg_total_relation_size('commits') AS log_bytes,
       (SELECT coalesce(sum(pg_column_size(body)), 0) FROM commits) AS live_bytes,
       (SELECT count(*) FROM documents) AS documents,
       pg_total_relation_size('documents') AS documents_bytes,
       (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'commits') AS dead,
       (SELECT ts FROM log_head WHERE id = 1) AS head
"""


async def observe(
    url: str,
    counters: Counters,
    seconds: float,
    every: float,
    feeding: asyncio.Task[None] | None = None,
) -> list[dict[str, Any]]:
    """Sample the log, the documents and the feed every ``every`` s for ``seconds``."""
    conn = await asyncpg.connect(url)
    samples: list[dict[str, Any]] = []
    try:
        newest = int(await conn.fetchval("SELECT coalesce(max(ts), 0) FROM commits"))
        g0, m0, b0 = await counters()
        t0 = last = time.monotonic()
        made = 0
        while time.monotonic() - t0 < seconds:
            await asyncio.sleep(max(0.0, last + every - time.monotonic()))
            if feeding is not None and feeding.done():
                await feeding  # the feed failed: its error, not a table of zeros
                raise RuntimeError("the feed stopped before the end of the run")
            row = await conn.fetchrow(_SIZES)
            new = int(await conn.fetchval("SELECT count(*) FROM commits WHERE ts > $1", newest))
            newest = max(newest, int(row["head"]))
            made += new
            g1, m1, b1 = await counters()
            now = time.monotonic()
            dt = now - last
            oldest = row["oldest"]
            samples.append(
                {
                    "t": round(now - t0, 1),
                    "rows": int(row["rows"]),
                    "log_mb": round(row["log_bytes"] / 1e6, 2),
                    "live_mb": round(row["live_bytes"] / 1e6, 2),
                    "dead": int(row["dead"] or 0),
                    "oldest_age_s": round((time.time_ns() - oldest) / 1e9, 1) if oldest else None,
                    "documents": int(row["documents"]),
                    "documents_mb": round(row["documents_bytes"] / 1e6, 2),
                    "commits_made": made,
                    "commits_per_s": round(new / dt, 1),
                    "offered_per_s": round((g1 - g0) / dt),
                    "consumed_per_s": round((m1 - m0) / dt),
                    "batches_per_s": round((b1 - b0) / dt, 1),
                    "load_1m": round(os.getloadavg()[0], 2),
                }
            )
            g0, m0, b0, last = g1, m1, b1, now
            x = samples[-1]
            _say(
                f"t={x['t']}s rows={x['rows']} log={x['log_mb']}MB"
                f" consumed={x['consumed_per_s']}/s of {x['offered_per_s']}/s"
            )
    finally:
        await conn.close()
    return samples


# -- the direct feed: the worker's batches at the rate, without the simulator and the worker --


def feed_mix(markets: int, messages: int = 50_000, window: int = 1_000) -> dict[str, Any]:
    """The simulator's own message mix, its model run in process: the share of trades, and
    how many markets ``window`` consecutive messages touch (on average)."""
    rng = random.Random(7)
    model = ExchangeModel(build_catalog(rng, markets, int(time.time() * 1000)), rng)
    out: list[Any] = []
    step = 0
    while len(out) < messages:
        step += 1
        model.step(1_700_000_000_000 + step, out)
    kinds = collections.Counter(type(e).__name__ for e in out)
    touched = [len({e.ticker for e in out[i : i + window]}) for i in range(0, len(out), window)]
    return {
        "trade_share": round(kinds["Trade"] / len(out), 4),
        "window": window,
        "touched_per_window": round(sum(touched) / len(touched), 1),
        "mix": dict(kinds),
    }


def _batch(n: int, tickers: list[str], trades: int, first_trade: int) -> dict[str, Any]:
    """A coalesced batch: a 10-level book and a ticker for each of ``tickers``, and
    ``trades`` trades (each its own document)."""
    ts = 1_700_000_000_000.0 + n
    books, prices, fills = [], [], []
    for i, t in enumerate(tickers):
        bid = 0.30 + ((n + i) % 20) / 100
        books.append(book(t, bid, n, ts))
        prices.append(
            {"ticker": t, "yesBid": bid, "yesAsk": round(bid + 0.02, 2), "volume": n, "ts": ts}
        )
    for k in range(trades):
        t = tickers[k % len(tickers)]
        fills.append(
            {
                "id": f"T{first_trade + k}",
                "ticker": t,
                "side": "buy" if k % 2 else "sell",
                "price": 0.5,
                "size": 1.0 + k % 9,
                "timestamp": ts,
            }
        )
    return {"prices": prices, "books": books, "trades": fills}


@dataclass
class DirectFeed:
    """Writes, back to back on one connection, the batches a ``rate`` msg/s feed makes."""

    rate: float
    markets: int
    mix: dict[str, Any]
    offered: float = 0.0
    pending_trades: float = 0.0
    dropped_trades: float = 0.0
    trades_written: int = 0
    batches: int = 0
    refused: list[str] = field(default_factory=list)

    @property
    def consumed(self) -> float:
        return self.offered - self.pending_trades - self.dropped_trades

    async def counters(self) -> tuple[float, float, float]:
        return self.offered, self.consumed, float(self.batches)

    async def run(self, url: str, admin_key: str, stop: asyncio.Event) -> None:
        client = await LightSyncClient(
            LightSyncClient.ws_url(url), keep_transitions=False
        ).connect()
        await client.authenticate("Admin", admin_key)
        tickers = [f"BENCH-{i:04d}" for i in range(self.markets)]
        share = self.mix["trade_share"]
        last = time.monotonic()
        try:
            while not stop.is_set():
                now = time.monotonic()
                arrived = self.rate * (now - last)
                last = now
                self.offered += arrived
                self.pending_trades += share * arrived
                if self.pending_trades > TRADES_PENDING:
                    self.dropped_trades += self.pending_trades - TRADES_PENDING
                    self.pending_trades = TRADES_PENDING
                touched = min(
                    self.markets,
                    max(1, round(self.mix["touched_per_window"] * arrived / self.mix["window"])),
                )
                trades = min(TRADES_PER_BATCH, int(self.pending_trades))
                batch = _batch(self.batches, tickers[:touched], trades, self.trades_written)
                response = await client.request(
                    "Mutation", "marketData:applyUpdates", {"batch": batch}
                )
                self.pending_trades -= trades
                if not response.get("success"):
                    # As the worker does with a batch the store refuses (not a transient
                    # error): logged and dropped, its trades lost.
                    self.refused.append(str(response.get("result"))[:200])
                    self.dropped_trades += trades
                    continue
                self.trades_written += trades
                self.batches += 1
        finally:
            await client.close()


# -- the runs -----------------------------------------------------------------------------------


async def run_pipeline(opts: argparse.Namespace, s: LocalSystem, url: str) -> dict[str, Any]:
    streaming = await s.start_streaming(
        markets=opts.markets,
        workflow_id="bench-compaction",
        ready=20,
        database=url + opts.options,
        nodes=opts.nodes,
    )
    metrics = streaming.metrics_url

    async def counters() -> tuple[float, float, float]:
        generated = (await asyncio.to_thread(s.sim_stats))["messages_generated"]
        consumed = await asyncio.to_thread(worker_counter, metrics, FEED_COUNTER)
        batches = await asyncio.to_thread(worker_counter, metrics, BATCH_COUNTER)
        return float(generated), consumed, batches

    _say(f"streaming; offering {opts.rate:,.0f} msg/s for {opts.seconds:g} s")
    await asyncio.to_thread(s.sim, "set_rate", rate=opts.rate)
    samples = await observe(url, counters, opts.seconds, opts.sample_s)
    await asyncio.to_thread(s.sim, "pause")
    return {"samples": samples}


async def run_direct(opts: argparse.Namespace, s: LocalSystem, url: str) -> dict[str, Any]:
    mix = await asyncio.to_thread(feed_mix, opts.markets)
    _say(f"the simulator's mix: {mix}")
    await asyncio.to_thread(s.start_cluster, url + opts.options, opts.nodes)
    feed = DirectFeed(opts.rate, opts.markets, mix)
    stop = asyncio.Event()
    _say(f"feeding the batches of {opts.rate:,.0f} msg/s for {opts.seconds:g} s")
    writer = asyncio.create_task(feed.run(s.store_url, s.admin_key, stop))
    try:
        samples = await observe(url, feed.counters, opts.seconds, opts.sample_s, writer)
    finally:
        stop.set()
        await writer
    return {
        "samples": samples,
        "mix": mix,
        "trades_written": feed.trades_written,
        "trades_dropped": round(feed.dropped_trades),
        "batches": feed.batches,
        "batches_refused": len(feed.refused),
        "refusals": sorted(set(feed.refused))[:5],
    }


def judge(
    samples: list[dict[str, Any]], retention_s: float, interval_s: float, overhead: float
) -> dict[str, Any]:
    """Whether the log stayed bounded once the retention window had passed."""
    elapsed = samples[-1]["t"]
    # A commit goes once it is older than the retention and every node's heartbeat has
    # recorded a position past it; a compaction comes every interval.
    window = retention_s + 2 * interval_s + HEARTBEAT_S
    steady = [x for x in samples if x["t"] >= window]
    commits_per_s = samples[-1]["commits_made"] / elapsed
    peak_rate = max(x["commits_per_s"] for x in samples)
    bound = max(10.0, SLACK * peak_rate * window)
    out: dict[str, Any] = {
        "window_s": window,
        "commits_made": samples[-1]["commits_made"],
        "commits_per_s": round(commits_per_s, 1),
        "rows_bound": round(bound),
        "steady_samples": len(steady),
    }
    if len(steady) < 2:
        out["bounded"] = None  # the run was shorter than the window: nothing to judge
        return out
    out["max_rows_steady"] = max(x["rows"] for x in steady)
    out["log_mb_at_window"] = steady[0]["log_mb"]
    out["log_mb_end"] = steady[-1]["log_mb"]
    out["log_mb_max"] = max(x["log_mb"] for x in samples)
    # The table against the commits it holds (their bodies as stored): rows only deleted
    # would pile up beside them; reused space stays within the largest set held so far.
    held = 0.0
    ratios = []
    for x in samples:
        held = max(held, x["live_mb"])
        if x["t"] >= window:
            ratios.append(x["log_mb"] / max(0.01, held))
    out["size_to_held_max"] = round(max(ratios), 2)
    out["size_to_held_end"] = round(ratios[-1], 2)
    # The deleted rows count: far more commits were made than the log holds.
    out["deleted"] = samples[-1]["commits_made"] - samples[-1]["rows"]
    out["bounded"] = (
        out["max_rows_steady"] <= bound
        and out["size_to_held_max"] <= overhead
        and out["deleted"] > out["max_rows_steady"]
    )
    return out


async def run(opts: argparse.Namespace, url: str, folder: Path) -> dict[str, Any]:
    s = LocalSystem(folder, pythonpath=[opts.before] if opts.before else [])
    try:
        _say(f"starting {opts.nodes} nodes and the balancer ({opts.feed} feed)")
        if opts.feed == "pipeline":
            return await run_pipeline(opts, s, url)
        return await run_direct(opts, s, url)
    finally:
        await asyncio.to_thread(s.stop)


def report(opts: argparse.Namespace, result: dict[str, Any], j: dict[str, Any]) -> None:
    samples = result["samples"]
    feed = (
        "the pipeline (simulator → worker)"
        if opts.feed == "pipeline"
        else "the worker's batches written directly"
    )
    code = f", nodes on {opts.before}" if opts.before else ""
    print_table(
        f"the commit log under {feed} at {opts.rate:,.0f} msg/s offered, {opts.nodes}"
        f" PostgreSQL nodes, retention_s={opts.retention_s:g},"
        f" compact_interval_s={opts.compact_interval_s:g}{code}",
        [
            "t s",
            "log rows",
            "log MB",
            "held MB",
            "dead rows",
            "oldest s",
            "documents",
            "documents MB",
            "commits/s",
            "offered msg/s",
            "consumed msg/s",
            "load",
        ],
        [
            [
                x["t"],
                x["rows"],
                x["log_mb"],
                x["live_mb"],
                x["dead"],
                x["oldest_age_s"],
                x["documents"],
                x["documents_mb"],
                x["commits_per_s"],
                x["offered_per_s"],
                x["consumed_per_s"],
                x["load_1m"],
            ]
            for x in samples
        ],
    )
    offered = sum(x["offered_per_s"] for x in samples) / len(samples)
    consumed = sum(x["consumed_per_s"] for x in samples) / len(samples)
    print(
        f"feed: {opts.rate:,.0f} msg/s asked for (goal {GOAL_RATE:,.0f}), {offered:,.0f} offered,"
        f" {consumed:,.0f} consumed ({consumed / max(1.0, offered):.0%});"
        f" {j['commits_per_s']} commits/s, {consumed / max(0.1, j['commits_per_s']):,.0f}"
        " msg per commit"
    )
    if opts.feed == "direct":
        print(
            f"  the simulator's mix: {result['mix']['trade_share']:.1%} trades,"
            f" {result['mix']['touched_per_window']:g} markets touched per"
            f" {result['mix']['window']:,} messages; {result['trades_written']:,} trades written,"
            f" {result['trades_dropped']:,} dropped (the coalescer's bound, or in a refused batch);"
            f" {result['batches']:,} batches written, {result['batches_refused']:,} refused"
            f" {result['refusals']}"
        )
    if j["bounded"] is None:
        print(f"bounded: not judged (the run is shorter than the {j['window_s']:g} s window)")
        return
    print(
        f"bounded: {j['bounded']}: after the {j['window_s']:g} s window at most"
        f" {j['max_rows_steady']:,} rows (bound {j['rows_bound']:,} = {SLACK} × peak commits/s ×"
        f" window) against {j['commits_made']:,} commits made ({j['deleted']:,} deleted);"
        f" log {j['log_mb_at_window']} MB at the window, {j['log_mb_end']} MB at the end,"
        f" {j['log_mb_max']} MB at most; its size at most x{j['size_to_held_max']} the most"
        f" commit bytes it held (x{j['size_to_held_end']} at the end; limit x{opts.overhead})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--seconds", type=float, default=110.0)
    parser.add_argument("--rate", type=float, default=GOAL_RATE, help="msg/s offered")
    parser.add_argument("--markets", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--retention-s", type=float, default=30.0)
    parser.add_argument("--compact-interval-s", type=float, default=5.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument(
        "--overhead", type=float, default=2.0, help="largest size / commit bytes held allowed"
    )
    parser.add_argument("--feed", choices=["pipeline", "direct"], default="pipeline")
    parser.add_argument("--before", help="another checkout's src/ to run every part on")
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    opts.before = str(Path(opts.before).resolve()) if opts.before else None
    if opts.quick:
        opts.seconds, opts.retention_s, opts.compact_interval_s = 12.0, 2.0, 1.0
        opts.sample_s, opts.markets = 1.0, 20
    opts.options = (
        f"?retention_s={opts.retention_s:g}&compact_interval_s={opts.compact_interval_s:g}"
    )
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-compaction-") as tmp, database(opts.pg) as url:
        result = asyncio.run(run(opts, url, Path(tmp)))
    samples = result["samples"]
    j = judge(samples, opts.retention_s, opts.compact_interval_s, opts.overhead)
    report(opts, result, j)
    emit(
        {
            "bench": "compaction",
            "feed": opts.feed,
            "before": opts.before,
            "rate_msgs_per_s": opts.rate,
            "nodes": opts.nodes,
            "retention_s": opts.retention_s,
            "compact_interval_s": opts.compact_interval_s,
            "seconds": opts.seconds,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            **result,
            **j,
        }
    )


if __name__ == "__main__":
    main()
