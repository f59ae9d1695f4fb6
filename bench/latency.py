"""End-to-end latency: simulator send -> pipeline -> store -> subscribed client, vs Redis pub/sub.

Real processes as in tests/e2e: ``marketpulse simulate`` (200 markets) and ``marketpulse
serve`` (SQLite). The pipeline's stream body (``pipeline._stream.StreamRunner``, the code the
Temporal stream activity runs; Temporal is not on the data path) runs in this process and
writes coalesced ``applyUpdates`` batches. Subscribers:

* the official PyPI ``convex`` client (tests/e2e/convex_watch.py, own process, the client's
  blocking ``watch_all`` iterator: its async iterators add ~1.2 ms of their own, see there) on
  ``getOrderbook`` of 10 markets;
* the official npm ``ConvexClient`` (tests/js/watch.mjs, node), the client the dashboard's
  ``useQuery`` runs on, on the same 10 markets (when node and tests/js/node_modules exist);
* N light sync clients (``RawSubscriber``, the leanest spec client, 2 processes), one
  ``getOrderbook`` each, round-robin over the 200 markets: the load, and their own latency
  figures.

Latency = receipt wall clock - the exchange ``ts_ms`` the simulator stamped on the message
(integer ms, so figures carry up to +1 ms of truncation). Coalesced messages count once, with
the newest one's stamp (as the pipeline bench does). A second table measures the same samples
from the exact time the simulator began writing that stamp's frames (its send log,
``GET /_sim/sends``), which is what "send -> receipt" means; both are printed.

Baseline, same run, same feed, same subscribers: a relay in this process reads the simulator
feed and publishes every order book change to a Redis channel per market; N redis-py
subscribers each subscribe to the same market as the corresponding client, and one more
redis-py client in a process of its own subscribes to the official clients' 10 markets (their
twin: the fleet's clients share two busy processes, the official ones each have one, and the
twin shows what that alone costs Redis). A second Redis run publishes, per round, only each
market's newest change, as our batches carry it ("redis, coalesced like ours"): at 10,000
msgs/s the plain one saturates the subscribers, not Redis. The relay's share of the path (the
feed's newest message, simulator send -> ``PUBLISH``) is printed beside the pipeline's (-> batch
send): what the two sides have in common. Beside it, every book's stamp age when its batch
left the pipeline: a batch's newest message has just arrived, its other books may have waited in
the worker's backlog (at 10,000 msgs/s, most of our latency), and how often each market's book
is sent (once the backlog forms, a book is about as old as the time between two of its changes).

The two fleets play different parts. Redis's subscribers are its measured clients: redis-py,
Redis's official Python client, as the npm and PyPI clients are ours. Our light clients are
load (their figures are printed, not judged), so they are the leanest spec client: with
``LightSyncClient`` (~52 µs of CPU per receipt, against ~19 for ``RawSubscriber`` and ~39 for
redis-py) they took half a core at 10,000 msgs/s and saturated the 2-core host during our run
(HISTORY.md, session 23). Each fleet's CPU per receipt is printed per rate.

Offered rates 100, 1,000, 2,500, 5,000 and 10,000 messages/s. Goal (issue 7): at 1,000 msgs/s
with 1,000 subscribers p50 <= 3 ms and p99 <= 15 ms; our latency as a multiple of Redis's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from _clients import Fleet
from _common import (
    FLEET_FLAGS,
    ROOT,
    Background,
    LoopSampler,
    cpu_seconds,
    cpu_shares,
    cpu_times,
    emit,
    loop_summary,
    print_table,
    scrape_loop,
)
from marketpulse._bench_report import redis_fell_behind
from marketpulse.kalshi import BookUpdated, FeedStats, KalshiCredentials, KalshiFeed
from marketpulse.pipeline._alerts import Alerter
from marketpulse.pipeline._store import StoreClient
from marketpulse.pipeline._stream import StreamRunner
from marketpulse.pipeline.config import StreamConfig
from marketpulse.reactive.sync.client import LightSyncClient
from marketpulse.testing import LocalSystem, ManagedProcess, percentile, summarize_ms

WATCH = ROOT / "tests" / "e2e" / "convex_watch.py"
# The npm ConvexClient twin (node, tests/js/node_modules from `scripts/install.sh --dev`).
NPM_WATCH = ROOT / "tests" / "js" / "watch.mjs"
NPM_WATCH_READY = shutil.which("node") is not None and (NPM_WATCH.parent / "node_modules").is_dir()
MARKETS = 200
OFFICIAL_MARKETS = 10
GOAL_P50_MS = 3.0
GOAL_P99_MS = 15.0
GOAL_LAG_P999_MS = 5.0
"""Issue 15: the store's event-loop lag p999 at 1,000 msgs/s, also with a stalling disk."""
nan = float("nan")


def _say(what: str) -> None:
    print(f"[latency] {what}", file=sys.stderr, flush=True)


def _feed(s: LocalSystem, markets: list[str], stats: FeedStats | None = None) -> KalshiFeed:
    creds = KalshiCredentials.from_file(
        s.sim_env["KALSHI_API_KEY_ID"], s.sim_env["KALSHI_PRIVATE_KEY_PATH"]
    )
    url = s.sim_url.replace("http", "ws", 1) + "/trade-api/ws/v2"
    return KalshiFeed(url, creds, markets, stats=stats)


def _cpu_per_receipt(
    fleet: Fleet, cpu: dict[float, float], rate: float, start: float, end: float
) -> float | None:
    """The subscriber processes' CPU per receipt timed over a window (µs), or None."""
    receipts = len(fleet.between(start, end))
    return round(cpu[rate] / receipts * 1e6, 1) if rate in cpu and receipts else None


async def _step_rates(
    s: LocalSystem,
    rates: list[float],
    window: float,
    settle: float,
    store: dict[float, dict[str, float]] | None = None,
    loop: dict[float, dict[str, Any]] | None = None,
    fleet: tuple[list[int], dict[float, float]] | None = None,
) -> list[tuple[float, float, float]]:
    """Offer each rate for ``settle`` + ``window`` s; returns (rate, start ms, end ms).

    With ``store``, also fills it with the store's per-commit breakdown of each rate (settle
    and window), ``loop`` with its event loop's lag and GC pauses over each window, and
    ``fleet`` (the subscriber processes' pids, rate -> CPU s) with the CPU those processes
    used over each window.
    """
    # The pipeline runs in this process, whose heap also holds the benchmark's bookkeeping:
    # a full collection walking it stopped the pipeline for 60-170 ms (seen in slow_disk.py as
    # an 87 ms push gap with the feed and the store busy as ever). The worker process freezes
    # its start-up heap (pipeline/worker.py); this one does the same before it measures, for
    # ours and for Redis's runs alike. Automatic collection stays on.
    gc.collect()
    gc.freeze()
    windows = []
    for rate in rates:
        await asyncio.to_thread(s.sim, "set_rate", rate=rate)
        # Scraped outside the measured window, so the scrape itself never lands in it.
        before = await asyncio.to_thread(_store_counters, s) if store is not None else None
        scraped = time.monotonic()
        await asyncio.sleep(settle)
        lag_before = (
            await asyncio.to_thread(scrape_loop, s.http, s.store_url) if loop is not None else None
        )
        start = time.time() * 1000
        cpu_before = cpu_times()
        fleet_before = sum(map(cpu_seconds, fleet[0])) if fleet is not None else 0.0
        await asyncio.sleep(window)
        cpu_after = cpu_times()
        if fleet is not None:
            fleet[1][rate] = sum(map(cpu_seconds, fleet[0])) - fleet_before
        windows.append((rate, start, time.time() * 1000))
        if lag_before is not None and loop is not None:
            lag_after = await asyncio.to_thread(scrape_loop, s.http, s.store_url)
            # The host's CPU over the window beside the loop's lag: time stolen by other
            # guests shows up as lag off the CPU that no change of ours can remove.
            shares = cpu_shares(cpu_before, cpu_after)
            loop[rate] = loop_summary(lag_before, lag_after) | shares
        if store is not None and before is not None:
            stages = _store_breakdown(before, await asyncio.to_thread(_store_counters, s))
            stages["groups_per_s"] = round(stages["groups"] / (time.monotonic() - scraped), 1)
            store[rate] = stages
    return windows


STAGES = ("execute", "write", "apply", "rerun")
STAGE_COLUMNS = (
    "mutation_wait_ms",
    "execute_ms",
    "write_ms",
    "apply_ms",
    "rerun_ms",
    "fanout_ms",
    "fanout_cpu_ms",
)


def _store_counters(s: LocalSystem) -> dict[str, float]:
    """The store's commit-path and fan-out counters from its ``/metrics``."""
    text = s.http.get(f"{s.store_url}/metrics").text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "marketpulse_commit_stage_seconds_total":
                out[sample.labels["stage"]] = sample.value
            elif sample.name in (
                "marketpulse_commit_groups_total",
                "marketpulse_sync_fanout_seconds_sum",
                "marketpulse_sync_fanout_cpu_seconds_total",
                "marketpulse_sync_mutation_wait_seconds_sum",
                "marketpulse_sync_mutation_wait_seconds_count",
            ):
                out[sample.name] = sample.value
    return out


def _store_breakdown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean ms per commit group of each stage between two scrapes, and of the fan-out."""
    groups = after["marketpulse_commit_groups_total"] - before["marketpulse_commit_groups_total"]
    out = {"groups": groups}
    for stage in STAGES:
        out[f"{stage}_ms"] = round((after[stage] - before[stage]) / max(groups, 1) * 1000, 3)
    spent = (
        after["marketpulse_sync_fanout_seconds_sum"] - before["marketpulse_sync_fanout_seconds_sum"]
    )
    # Per group, like the stages: a wide fan-out is written over several loop turns.
    out["fanout_ms"] = round(spent / max(groups, 1) * 1000, 3)
    # Its CPU (the loop thread's and the helpers'): wall minus CPU is time off the CPU, mostly
    # the loop thread preempted by a reader its write woke (session 35).
    cpu = "marketpulse_sync_fanout_cpu_seconds_total"
    if cpu in after:  # the metric is newer than some checkouts compared here
        spent_cpu = after[cpu] - before.get(cpu, 0.0)
        out["fanout_cpu_ms"] = round(spent_cpu / max(groups, 1) * 1000, 3)
    # Per mutation (a group may hold two): from its frame's read to the engine starting it.
    wait = "marketpulse_sync_mutation_wait_seconds"
    if f"{wait}_count" in after:  # the metric is newer than some checkouts compared here
        waited = after[f"{wait}_sum"] - before.get(f"{wait}_sum", 0.0)
        started = after[f"{wait}_count"] - before.get(f"{wait}_count", 0.0)
        out["mutation_wait_ms"] = round(waited / max(started, 1) * 1000, 3)
    return out


def _official_samples(path: Path) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """A watcher's samples, (receipt ms, latency ms) of each new value, and (receipt ms, the
    client's own ms) of those whose line carries ``own`` (the npm watcher's)."""
    samples = []
    own = []
    last: dict[int, Any] = {}
    for line in path.read_text().splitlines():
        if not line.startswith('{"i"'):
            continue
        rec = json.loads(line)
        if "v" not in rec:  # an error line
            continue
        stamp = None if rec["v"] is None else rec["v"]["updatedAt"]
        first = rec["i"] not in last
        if not first and stamp is not None and stamp != last[rec["i"]]:
            samples.append((rec["at"], rec["at"] - float(stamp)))
            if rec.get("own") is not None:
                own.append((rec["at"], float(rec["own"])))
        last[rec["i"]] = stamp
    return samples, own


def _send_times(s: LocalSystem) -> dict[int, float]:
    """The simulator's send log: stamp (whole ms) -> wall-clock ms its frames went out."""
    body = s.http.get(f"{s.sim_url}/_sim/sends").json()
    return {int(stamp): float(at) for stamp, at in body["sends"]}


def _exact(samples: list[tuple[float, float]], sends: dict[int, float]) -> tuple[list[float], int]:
    """Latencies measured from the exact send time instead of the whole-ms stamp, and how
    many samples were left out.

    A sample is (receipt ms, receipt - stamp); the stamp is recovered from it. Samples whose
    stamp the send log does not hold (none, normally) are left out and counted.
    """
    exact = []
    missing = 0
    for at, lat in samples:
        sent = sends.get(round(at - lat))
        if sent is None:
            missing += 1
        else:
            exact.append(at - sent)
    return exact, missing


def _from_send(samples: list[tuple[float, float]], sends: dict[int, float]) -> dict[str, float]:
    """:func:`summarize_ms` of :func:`_exact`, with the count left out."""
    exact, missing = _exact(samples, sends)
    return {**summarize_ms(exact), "unmatched": missing}


def _relay_share(rounds: list[tuple[float, float]], sends: dict[int, float]) -> dict[str, float]:
    """:func:`summarize_ms` of each (epoch ms sent on, its newest stamp) round's time from that
    stamp's simulator send to its sending on: a relay's own share of the path."""
    return summarize_ms([at - sends[int(newest)] for at, newest in rounds if int(newest) in sends])


CDF_POINTS = (*range(1, 100), 99.5, 99.9, 100)


def _cdf(values: list[float]) -> list[tuple[float, float]]:
    """(fraction, ms) at :data:`CDF_POINTS`: the CDF the results' plot draws."""
    return [(q / 100, round(percentile(values, q), 3)) for q in CDF_POINTS] if values else []


def _longest_gap(receipts: list[float], start: float, end: float) -> float:
    """The longest time (ms) in [start, end) with no receipt at all."""
    times = sorted(at for at in receipts if start <= at < end)
    edges = [start, *times, end]
    return round(max(b - a for a, b in itertools.pairwise(edges)), 3)


class QueryProbe(Background):
    """An HTTP query of one order book every ``every`` s: its round trips show whether the
    store kept answering (a blocked event loop answers nothing)."""

    def __init__(self, store_url: str, ticker: str, every: float = 0.05) -> None:
        self.store_url = store_url
        self.ticker = ticker
        self.every = every
        self.samples: list[tuple[float, float]] = []

    async def _run(self) -> None:
        body = {"path": "marketData:getOrderbook", "args": {"ticker": self.ticker, "depth": 10}}
        async with httpx.AsyncClient(base_url=self.store_url, timeout=30) as http:
            while True:
                started = time.perf_counter()
                (await http.post("/api/query", json=body)).raise_for_status()
                self.samples.append((time.time() * 1000, (time.perf_counter() - started) * 1000))
                await asyncio.sleep(self.every)

    def between(self, start: float, end: float) -> list[float]:
        return [ms for at, ms in self.samples if start <= at < end]


class TimedStore(StoreClient):
    """The pipeline's store client, timing each ``applyUpdates`` round trip (a breakdown)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[float, float]] = []
        # (ack epoch ms, send epoch ms, the batch's newest book/price stamp)
        self.ages: list[tuple[float, float, float]] = []
        # (send epoch ms, one book's stamp): every book of every batch, not only the newest.
        # A batch's newest stamp left the feed a moment ago; its other books may have waited
        # in the pipeline's backlog (at 10,000 msg/s, most of the latency: HISTORY session 31).
        self.book_ages: list[tuple[float, float]] = []
        # (send epoch ms, ms since the same market's book was last sent): how often each market
        # is written, which bounds how fresh its book can be once the backlog forms.
        self.book_gaps: list[tuple[float, float]] = []
        self._book_sent: dict[str, float] = {}

    async def send_mutation(self, path: str, args: dict[str, Any], **kwargs: Any) -> Any:
        # Every mutation goes through here (``mutation`` sends, then waits), and the writer
        # keeps several batches in flight: the round trip is from this send to its answer.
        started = time.perf_counter()
        sent_at = time.time() * 1000
        sent = await super().send_mutation(path, args, **kwargs)
        if path != "marketData:applyUpdates":
            return sent
        for e in args.get("batch", {}).get("books", ()):
            if e.get("valid") and isinstance(e.get("ts"), int | float):
                self.book_ages.append((sent_at, float(e["ts"])))
            last = self._book_sent.get(e["ticker"])
            if last is not None:
                self.book_gaps.append((sent_at, sent_at - last))
            self._book_sent[e["ticker"]] = sent_at
        return _TimedSent(self, sent, args, started, sent_at)


class _TimedSent:
    """A sent ``applyUpdates``: records its round trip and its newest stamp when answered."""

    def __init__(
        self, store: TimedStore, sent: Any, args: dict[str, Any], started: float, sent_at: float
    ) -> None:
        self.path = sent.path
        self.connection = sent.connection
        self._store = store
        self._sent = sent
        self._args = args
        self._started = started
        self._sent_at = sent_at

    async def result(self) -> Any:
        try:
            return await self._sent.result()
        finally:
            acked_at = time.time() * 1000
            self._store.calls.append((acked_at, (time.perf_counter() - self._started) * 1000))
            batch = self._args.get("batch", {})
            stamps = [
                float(e["ts"])
                for kind in ("books", "prices")
                for e in batch.get(kind, ())
                if isinstance(e.get("ts"), int | float)
            ]
            if stamps:
                self._store.ages.append((acked_at, self._sent_at, max(stamps)))


async def ours(
    s: LocalSystem,
    markets: list[str],
    subscribers: int,
    rates: list[float],
    window: float,
    transport: Literal["websocket", "http"] = "websocket",
    in_flight: int | None = None,
    loop_series: bool = False,
) -> dict[str, Any]:
    """Our side of the run; ``loop_series`` samples the store's loop lag over time too (a
    scrape of its /metrics four times a second: see :class:`LoopSampler` for its cost)."""
    store = TimedStore(s.store_url, s.admin_key, transport=transport)
    runner = StreamRunner(
        stream_id="bench-latency",
        config=StreamConfig(markets=markets, exchange="sim"),
        markets_version=1,
        feed_factory=lambda ms, stats: _feed(s, ms, stats),
        store=store,
        alerter=Alerter(),
        **({} if in_flight is None else {"batches_in_flight": in_flight}),
    )
    stop = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(runner.run(stop=stop))
    out = s.root / "watch.jsonl"
    out_npm = s.root / "watch-npm.jsonl"
    official = official_npm = None
    store_stages: dict[float, dict[str, float]] = {}
    loop: dict[float, dict[str, Any]] = {}
    sampler = LoopSampler(s.store_url) if loop_series else None
    probe = QueryProbe(s.store_url, markets[0])
    try:
        await asyncio.to_thread(s.sim, "set_rate", rate=rates[0])
        deadline = time.monotonic() + 60
        while not all(await asyncio.to_thread(lambda: [s.store_book(t) for t in markets[:20]])):
            if time.monotonic() > deadline or task.done():
                raise RuntimeError("the pipeline did not fill the store")
            await asyncio.sleep(0.2)
        args = [json.dumps({"ticker": t, "depth": 10}) for t in markets[:OFFICIAL_MARKETS]]
        official = ManagedProcess(
            "watch",
            [sys.executable, str(WATCH), s.store_url, "marketData:getOrderbook", *args],
            log_path=out,
        ).start()
        if NPM_WATCH_READY:
            official_npm = ManagedProcess(
                "watch-npm",
                ["node", str(NPM_WATCH), s.store_url, "marketData:getOrderbook", *args],
                log_path=out_npm,
            ).start()
        ws_url = LightSyncClient.ws_url(s.store_url)
        subs = [
            (
                ws_url,
                None,
                "marketData:getOrderbook",
                {"ticker": markets[i % len(markets)], "depth": 10},
                True,
            )
            for i in range(subscribers)
        ]
        _say(f"store filled; starting {subscribers} subscribers")
        fleet = Fleet("raw", "", subs)
        fleet_cpu: dict[float, float] = {}
        await asyncio.to_thread(fleet.__enter__)
        try:
            while '"ready"' not in out.read_text() or (
                official_npm is not None and '"ready"' not in out_npm.read_text()
            ):
                await asyncio.sleep(0.05)
            _say("subscribed; stepping rates")
            if sampler is not None:
                sampler.start()
            probe.start()
            windows = await _step_rates(
                s,
                rates,
                window,
                settle=min(1.0, window / 2),
                store=store_stages,
                loop=loop,
                fleet=(fleet.pids, fleet_cpu),
            )
            await asyncio.sleep(0.3)
        finally:
            if sampler is not None:
                await sampler.stop()
            await probe.stop()
            await asyncio.to_thread(fleet.__exit__, None, None, None)
    finally:
        _say("ours done")
        for watcher in (official, official_npm):
            if watcher is not None:
                watcher.stop(5)
        stop.set_result(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await store.aclose()
    official_samples, _ = _official_samples(out)
    npm_samples, npm_own = _official_samples(out_npm) if official_npm is not None else ([], [])
    result = {}
    for rate, start, end in windows:

        def within(samples: list[tuple[float, float]]) -> list[tuple[float, float]]:
            return [(at, lat) for at, lat in samples if start <= at < end]  # noqa: B023

        result[str(int(rate))] = {
            "raw": {
                "official": within(official_samples),
                "official_npm": within(npm_samples),
                "light": within(fleet.samples),
            },
            "official": summarize_ms([lat for at, lat in official_samples if start <= at < end]),
            "official_npm": summarize_ms([lat for at, lat in npm_samples if start <= at < end]),
            # Of that, the npm client's own work (its message event -> onUpdate callback).
            "official_npm_own": summarize_ms([ms for at, ms in npm_own if start <= at < end]),
            "light": summarize_ms(fleet.between(start, end)),
            "light_cpu_us_per_receipt": _cpu_per_receipt(fleet, fleet_cpu, rate, start, end),
            "apply_updates_rtt": summarize_ms([ms for at, ms in store.calls if start <= at < end]),
            # Where the time goes: the newest stamp's age when its batch left the pipeline
            # (feed + coalescing) and when the store acknowledged it (+ commit).
            "newest_age_at_send": summarize_ms(
                [sent - newest for at, sent, newest in store.ages if start <= at < end]
            ),
            "newest_age_at_ack": summarize_ms(
                [at - newest for at, _, newest in store.ages if start <= at < end]
            ),
            "book_age_at_send": summarize_ms([sent - ts for sent, ts in within(store.book_ages)]),
            "book_write_interval": summarize_ms([gap for _, gap in within(store.book_gaps)]),
            "raw_ages": [a for a in store.ages if start <= a[0] < end],
            "batches_per_s": round(
                sum(start <= at < end for at, _ in store.calls) / ((end - start) / 1000), 1
            ),
            # The store's own per-commit breakdown (its /metrics, mean ms per group).
            "store_commit": store_stages.get(rate, {}),
            "dropped": fleet.dropped,
            # The store's event loop over the window (its /metrics histograms), and over time.
            "loop": loop.get(rate, {}),
            "loop_series": [
                {**p, "t_s": round((p["at"] - start) / 1000, 3)}
                for p in (sampler.between(start, end) if sampler is not None else ())
            ],
            # Queries kept being answered (an HTTP query every 50 ms), and pushes kept coming:
            # the longest time no light subscriber received anything.
            "query_probe": summarize_ms(probe.between(start, end)),
            "longest_push_gap_ms": _longest_gap([at for at, _ in fleet.samples], start, end),
            "window_ms": (start, end),
        }
    return result


async def redis_baseline(
    s: LocalSystem,
    markets: list[str],
    subscribers: int,
    rates: list[float],
    window: float,
    coalesce: bool = False,
) -> dict[str, Any]:
    """Redis pub/sub on the same feed. ``coalesce``: each publish round sends only the newest
    change of each market, as our pipeline's batches do. Publishing every change is the plain
    baseline, but at 10,000 msgs/s its 50,000 deliveries a second saturate this host's Python
    subscribers, so its latency then measures the subscribers; the coalesced one delivers as
    many messages as ours and stays a transport-to-transport comparison."""
    import redis.asyncio as aioredis

    conn = aioredis.Redis(host="127.0.0.1", port=6379)
    pending: list[tuple[str, bytes]] = []
    dirty = asyncio.Event()
    # (publish epoch ms, the newest stamp relayed so far): the relay's share, as ours has its
    # batches'.
    rounds: list[tuple[float, float]] = []
    newest = 0

    async def relay() -> None:
        nonlocal newest
        async with _feed(s, markets) as feed:
            async for ev in feed:
                # A book whose last message carried no exchange stamp (a snapshot) has nothing
                # to measure from; sent on, its null stamp killed the subscribers' listeners.
                if isinstance(ev, BookUpdated) and ev.book.ts_ms is not None:
                    pending.append((ev.ticker, orjson.dumps({"ts": ev.book.ts_ms})))
                    newest = max(newest, ev.book.ts_ms)
                    dirty.set()

    async def publish() -> None:
        # Same shape as the pipeline's writer: whatever piled up goes in one round trip.
        while True:
            await dirty.wait()
            dirty.clear()
            # dict() keeps each market's newest change, at its first change's place.
            batch = list(dict(pending).items()) if coalesce else pending[:]
            pending.clear()
            rounds.append((time.time() * 1000, newest))
            pipe = conn.pipeline(transaction=False)
            for channel, data in batch:
                pipe.publish(channel, data)
            await pipe.execute()

    await asyncio.to_thread(s.sim, "set_rate", rate=rates[0])
    tasks = [asyncio.create_task(relay()), asyncio.create_task(publish())]
    _say("redis baseline" + (", coalesced" if coalesce else ""))
    fleet = Fleet("redis", "", [[markets[i % len(markets)]] for i in range(subscribers)])
    # The official clients' twin (plain run only): one redis-py client in a process of its own
    # on the same markets (the fleet's clients share two busy processes, the official ones do
    # not).
    watcher = None if coalesce else Fleet("redis", "", [markets[:OFFICIAL_MARKETS]])
    fleets = [f for f in (fleet, watcher) if f is not None]
    fleet_cpu: dict[float, float] = {}
    try:
        for f in fleets:
            await asyncio.to_thread(f.__enter__)
        try:
            windows = await _step_rates(
                s, rates, window, settle=min(1.0, window / 2), fleet=(fleet.pids, fleet_cpu)
            )
            await asyncio.sleep(0.3)
        finally:
            for f in reversed(fleets):
                await asyncio.to_thread(f.__exit__, None, None, None)
    finally:
        for t in tasks:
            t.cancel()
        # Bounded all the same: nothing after this needs them (a close used to hang when
        # 3.11's wait_for swallowed its cancellation, src/marketpulse/_aio.py).
        await asyncio.wait(tasks, timeout=5)
        await conn.aclose()
    return {
        str(int(rate)): {
            **summarize_ms(fleet.between(start, end)),
            "raw": [(at, lat) for at, lat in fleet.samples if start <= at < end],
            **(
                {"watch_raw": [(at, lat) for at, lat in watcher.samples if start <= at < end]}
                if watcher is not None
                else {}
            ),
            "cpu_us_per_receipt": _cpu_per_receipt(fleet, fleet_cpu, rate, start, end),
            "raw_rounds": [r for r in rounds if start <= r[0] < end],
        }
        for rate, start, end in windows
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--subscribers", type=int)
    parser.add_argument("--window", type=float)
    parser.add_argument("--rates", type=float, nargs="*")
    parser.add_argument(
        "--store-transport",
        choices=["websocket", "http"],
        default="websocket",
        help="how the pipeline sends its batches to the store (default: websocket)",
    )
    parser.add_argument(
        "--slow-disk",
        type=float,
        default=0.0,
        metavar="S",
        help="inject a stalling disk: the store's SQLite writer sleeps S s on one flush every "
        "--slow-disk-every s (MARKETPULSE_TEST_SLOW_DISK_S)",
    )
    parser.add_argument("--slow-disk-every", type=float, default=2.0, metavar="S")
    parser.add_argument(
        "--loop-series",
        action="store_true",
        help="also sample the store's loop lag over time (four scrapes a second, which cost "
        "its p99 a little; always on with --slow-disk, whose plot it is)",
    )
    parser.add_argument(
        "--batches-in-flight",
        type=int,
        metavar="N",
        help="applyUpdates batches the pipeline keeps in flight (default: the writer's)",
    )
    parser.add_argument(
        "--inline-writes",
        type=int,
        default=0,
        metavar="N",
        help="the store fsyncs commits of <= N writes on its event loop's thread when idle "
        "(MARKETPULSE_SQLITE_INLINE_MAX_WRITES; default 0: never, the store's default)",
    )
    opts = parser.parse_args()
    store_env = {"MARKETPULSE_SQLITE_INLINE_MAX_WRITES": str(opts.inline_writes)}
    if opts.slow_disk > 0:
        store_env["MARKETPULSE_TEST_SLOW_DISK_S"] = str(opts.slow_disk)
        store_env["MARKETPULSE_TEST_SLOW_DISK_EVERY_S"] = str(opts.slow_disk_every)
    subscribers = opts.subscribers or (200 if opts.quick else 1000)
    window = opts.window or (0.75 if opts.quick else 10.0)
    # 2,500 and 5,000 show where the store saturates on the benchmark host (between them in
    # session 31): the curve of latency against rate, not three points of it.
    rates = opts.rates or [100.0, 1000.0, 2500.0, 5000.0, 10000.0]
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        s = LocalSystem(Path(tmp))
        try:
            s.start_store(*FLEET_FLAGS, env=store_env)
            s.start_simulator(markets=MARKETS, rate=rates[0])
            markets = s.sim_markets()
            mine = await ours(
                s,
                markets,
                subscribers,
                rates,
                window,
                opts.store_transport,
                opts.batches_in_flight,
                loop_series=opts.slow_disk > 0 or opts.loop_series,
            )
            base = await redis_baseline(s, markets, subscribers, rates, window)
            merged = await redis_baseline(s, markets, subscribers, rates, window, coalesce=True)
            sends = _send_times(s)
        finally:
            s.stop()
    rows = []
    exact_rows = []
    runs = []
    for rate in rates:
        key = str(int(rate))
        raw = mine[key].pop("raw")
        ages = mine[key].pop("raw_ages")
        # The pipeline's share, exactly: its batch's newest message, simulator send -> batch
        # send (the send log again, not the whole-ms stamp).
        age_exact = _relay_share([(sent, newest) for _, sent, newest in ages], sends)
        r = dict(base[key])
        # Its baseline: the Redis relay's share, the same feed's newest message -> PUBLISH.
        relay_exact = _relay_share(r.pop("raw_rounds"), sends)
        merged[key].pop("raw_rounds")
        raw["redis"] = r.pop("raw")
        raw["redis_watch"] = r.pop("watch_raw")
        rc = dict(merged[key])
        raw["redis_coalesced"] = rc.pop("raw")
        # The subscriber fleets' own CPU per receipt: what each side's load costs the host.
        fleet_cpu = {
            "light": mine[key]["light_cpu_us_per_receipt"],
            "redis": r.pop("cpu_us_per_receipt"),
            "redis_coalesced": rc.pop("cpu_us_per_receipt"),
        }
        o, li = mine[key]["official"], mine[key]["light"]
        npm = mine[key]["official_npm"]
        # The same samples measured from the simulator's send log rather than the whole-ms
        # stamp (which is up to 1 ms older than the send): what "send -> receipt" means.
        exact = {name: _from_send(samples, sends) for name, samples in raw.items()}
        # The feed's own longest silence over the same window (the simulator's send log): a
        # push gap no longer than it is the feed's, not the store's.
        start, end = mine[key].pop("window_ms")
        feed_gap = (
            _longest_gap(list(sends.values()), start, end)
            if sends and min(sends.values()) <= start
            else None
        )
        ours_name = "official_npm" if raw["official_npm"] else "official"
        cdf = {
            "client": ours_name,
            "ours": _cdf(_exact(raw[ours_name], sends)[0]),
            "redis": _cdf(_exact(raw["redis"], sends)[0]),
            "redis_coalesced": _cdf(_exact(raw["redis_coalesced"], sends)[0]),
        }
        exact_rows.append(
            [
                f"{rate:,.0f}",
                *(
                    f"{e['p50_ms']:.2f} / {e['p99_ms']:.2f} / {e['p999_ms']:.2f}"
                    for e in (
                        exact[n]
                        for n in (
                            "official",
                            "official_npm",
                            "light",
                            "redis",
                            "redis_watch",
                            "redis_coalesced",
                        )
                    )
                ),
            ]
        )
        ratio_p50 = round(o["p50_ms"] / r["p50_ms"], 2) if r["p50_ms"] else None
        ratio_p99 = round(o["p99_ms"] / r["p99_ms"], 2) if r["p99_ms"] else None
        goal = f"p50 <= {GOAL_P50_MS:g}, p99 <= {GOAL_P99_MS:g}" if rate == 1000 else ""
        rows.append(
            [
                f"{rate:,.0f}",
                f"{o['p50_ms']:.2f} / {o['p99_ms']:.2f} / {o['p999_ms']:.2f} (n={o['n']})",
                f"{npm['p50_ms']:.2f} / {npm['p99_ms']:.2f} / {npm['p999_ms']:.2f} (n={npm['n']})",
                f"{li['p50_ms']:.2f} / {li['p99_ms']:.2f} / {li['p999_ms']:.2f} (n={li['n']})",
                f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} / {r['p999_ms']:.2f} (n={r['n']})",
                f"{ratio_p50}x / {ratio_p99}x",
                goal,
            ]
        )
        runs.append(
            {
                "rate": rate,
                "official": o,
                "official_npm": npm,
                "official_npm_own": mine[key]["official_npm_own"],
                "light": li,
                "redis": r,
                "redis_coalesced": rc,
                "p50_vs_redis": ratio_p50,
                "p99_vs_redis": ratio_p99,
                "dropped_clients": mine[key]["dropped"],
                "apply_updates_rtt": mine[key]["apply_updates_rtt"],
                "newest_age_at_send": mine[key]["newest_age_at_send"],
                "book_age_at_send": mine[key]["book_age_at_send"],
                "book_write_interval": mine[key]["book_write_interval"],
                "newest_sent_to_batch_sent": age_exact,
                "redis_newest_sent_to_publish": relay_exact,
                "newest_age_at_ack": mine[key]["newest_age_at_ack"],
                "batches_per_s": mine[key]["batches_per_s"],
                "store_commit": mine[key]["store_commit"],
                "from_send": exact,
                "cdf": cdf,
                "loop": mine[key]["loop"],
                "loop_series": mine[key]["loop_series"],
                "query_probe": mine[key]["query_probe"],
                "longest_push_gap_ms": mine[key]["longest_push_gap_ms"],
                "feed_longest_gap_ms": feed_gap,
                "fleet_cpu_us_per_receipt": fleet_cpu,
            }
        )
        print(
            f"{rate:,.0f} msgs/s: subscriber processes' CPU per receipt (µs, /proc ticks): "
            + ", ".join(f"{name} {us}" for name, us in fleet_cpu.items())
        )
        own = mine[key]["official_npm_own"]
        if own["n"]:
            print(
                f"{rate:,.0f} msgs/s: the npm client's own work per update (its WebSocket "
                f"message event -> onUpdate callback), p50 / p99 / p999 ms: {own['p50_ms']:.3f}"
                f" / {own['p99_ms']:.3f} / {own['p999_ms']:.3f} (n={own['n']})"
            )
        if redis_fell_behind(exact):
            print(
                f"{rate:,.0f} msgs/s: Redis's subscriber fleet fell behind the feed (p50 "
                f"{exact['redis']['p50_ms']:.2f} ms against {exact['redis_watch']['p50_ms']:.2f}"
                " for one redis-py client on the official clients' markets): a ratio against "
                "the fleet flatters ours; compare with that client"
            )
    print_table(
        f"latency, simulator send -> client receipt, {MARKETS} markets, {subscribers} subscribers "
        "(p50 / p99 / p999 ms)",
        [
            "msgs/s",
            "official PyPI client",
            "official npm client",
            "light clients",
            "redis pub/sub",
            "vs redis",
            "goal",
        ],
        rows,
    )
    print_table(
        "the same, measured from the simulator's send time (its send log) instead of the "
        "whole-ms stamp (p50 / p99 / p999 ms)",
        [
            "msgs/s",
            "official PyPI client",
            "official npm client",
            "light clients",
            "redis",
            "redis, one client on 10 markets",
            "redis, coalesced like ours",
        ],
        exact_rows,
    )
    print_table(
        "where the time goes (p50 ms; the store's stages are its mean per commit group, "
        "its mutation wait per mutation)",
        [
            "msgs/s",
            "newest stamp age at pipeline send",
            "each book's stamp age at send",
            "a market's book sent every",
            "newest message: sim send -> batch send",
            "(Redis relay: -> PUBLISH)",
            "applyUpdates round trip",
            "store: frame read -> mutation start",
            "execute",
            "write (fsync)",
            "apply",
            "re-run",
            "fan-out",
            "of it on the CPU",
            "groups/s",
        ],
        [
            [
                f"{r['rate']:,.0f}",
                r["newest_age_at_send"]["p50_ms"],
                r["book_age_at_send"]["p50_ms"],
                r["book_write_interval"]["p50_ms"],
                r["newest_sent_to_batch_sent"]["p50_ms"],
                r["redis_newest_sent_to_publish"]["p50_ms"],
                r["apply_updates_rtt"]["p50_ms"],
                *(r["store_commit"].get(k, float("nan")) for k in STAGE_COLUMNS),
                r["store_commit"].get("groups_per_s", float("nan")),
            ]
            for r in runs
        ],
    )
    disk = (
        f"slow disk: {opts.slow_disk:g} s stall every {opts.slow_disk_every:g} s"
        if opts.slow_disk > 0
        else "no injected stall"
    )
    print_table(
        f"the store's event loop over each window ({disk}; inline writes <= "
        f"{opts.inline_writes}); lag from its histogram, goal p999 <= {GOAL_LAG_P999_MS:g} ms",
        [
            "msgs/s",
            "lag p50 / p99 / p999 ms",
            "of it off (blocked) / on the CPU, p999 ms",
            "largest lag <= ms",
            "gen-2 GCs",
            "longest gen-2 GC <= ms (CPU <= ms)",
            "HTTP query p50 / p99 / max ms",
            "longest push gap ms (the feed's)",
            "host CPU busy / stolen %",
        ],
        [
            [
                f"{r['rate']:,.0f}",
                f"{r['loop'].get('p50_ms', nan):.2f} / {r['loop'].get('p99_ms', nan):.2f} / "
                f"{r['loop'].get('p999_ms', nan):.2f} (n={r['loop'].get('n', 0):.0f})",
                f"{r['loop'].get('off_cpu_p999_ms', nan):.2f} "
                f"({r['loop'].get('blocked_p999_ms', nan):.2f}) / "
                f"{r['loop'].get('on_cpu_p999_ms', nan):.2f}",
                r["loop"].get("max_le_ms", nan),
                r["loop"].get("gc2_pauses", nan),
                f"{r['loop'].get('gc2_max_le_ms', nan):g} "
                f"({r['loop'].get('gc2_cpu_max_le_ms', nan):g})",
                f"{r['query_probe']['p50_ms']:.2f} / {r['query_probe']['p99_ms']:.2f} / "
                f"{r['query_probe']['max_ms']:.2f}",
                f"{r['longest_push_gap_ms']:.1f} "
                f"({nan if r['feed_longest_gap_ms'] is None else r['feed_longest_gap_ms']:.1f})",
                f"{r['loop'].get('busy_pct', nan):.0f} / {r['loop'].get('steal_pct', nan):.1f}",
            ]
            for r in runs
        ],
    )
    at_1k = next((r for r in runs if r["rate"] == 1000), None)
    goals: dict[str, Any] = {}
    if at_1k is not None:
        # Judged on "simulator send -> official client receipt" as the send log measures it;
        # the stamp-based figures (up to 1 ms early) are kept beside them.
        clients = {"official_npm": "npm ConvexClient", "official": "PyPI convex"}
        goals = {"goal_p50_ms": GOAL_P50_MS, "goal_p99_ms": GOAL_P99_MS}
        for name in clients:
            exact, stamped = at_1k["from_send"][name], at_1k[name]
            goals[name] = {
                "p50_ms": exact["p50_ms"],
                "p99_ms": exact["p99_ms"],
                "met_p50": exact["p50_ms"] <= GOAL_P50_MS,
                "met_p99": exact["p99_ms"] <= GOAL_P99_MS,
                "from_stamp": {"p50_ms": stamped["p50_ms"], "p99_ms": stamped["p99_ms"]},
            }
        goals["goal_loop_lag_p999_ms"] = GOAL_LAG_P999_MS
        goals["loop_lag_p999_ms"] = at_1k["loop"].get("p999_ms")
        goals["met_loop_lag"] = (at_1k["loop"].get("p999_ms") or nan) <= GOAL_LAG_P999_MS
        print(
            f"goal at 1,000 msgs/s, {subscribers} subscribers (p50 <= {GOAL_P50_MS:g} ms, "
            f"p99 <= {GOAL_P99_MS:g} ms, from the send log): "
            + "; ".join(
                f"{label} {goals[name]['p50_ms']:.2f} / {goals[name]['p99_ms']:.2f} ms "
                f"({'met' if goals[name]['met_p50'] and goals[name]['met_p99'] else 'missed'})"
                for name, label in clients.items()
            )
        )
    emit(
        {
            "bench": "latency",
            "quick": opts.quick,
            "markets": MARKETS,
            "subscribers": subscribers,
            "window_s": window,
            "store_transport": opts.store_transport,
            "batches_in_flight": opts.batches_in_flight,
            "slow_disk": {"stall_s": opts.slow_disk, "every_s": opts.slow_disk_every},
            "sqlite_inline_max_writes": opts.inline_writes,
            "runs": runs,
            "goals": goals,
        }
    )


if __name__ == "__main__":
    asyncio.run(main())
