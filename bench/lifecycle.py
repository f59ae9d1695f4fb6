"""History from the first second, and lifecycle within a second (issue 18).

A real ``marketpulse dev`` (Temporal, store, simulator, worker, stream) on a fresh data dir:

* **history**: from the launch of ``dev`` and from its ready file (the start the e2e test
  counts from), the time until each market's ``marketData:getCandles`` (the chart's query: 1
  minute, 1,500 candles) spans at least 24 h. Read by the official ``convex`` client subscribed
  to every market's query, in its own process (the client's runtime would compete with this
  one's loop) started before ``dev``: pushes, not polls that would load the store being
  measured. Goal: 5 s for every market (2.5 s on a quiet host).
* **lifecycle**: one light sync client (the Convex wire protocol) subscribed to ``getMarket`` of
  every market. Each market in turn is closed, then settled, through the simulator's control
  API (``POST /_sim/control`` ``set_status``); the figure is the time from just before that
  request until the subscriber's ``getMarket`` shows the status (and, when settled, the
  settlement value and result). The first half of the markets go while the history is still
  being written (reported as "history loading"), the rest after it, on the live feed alone.
  Goal: 1 s.
* **baseline** (same run, same subscriber): an ordinary price change, from the stamp the
  simulator put in its frame (``updatedAt``) to its receipt by the same subscriber.
* ``--before SRC``: the history alone, on another checkout's code (``dev`` and every child
  with ``SRC`` first on ``PYTHONPATH``, e.g. main's ``src``) and on this one in turn: before
  then after, the order swapped each further round (``--rounds``). No lifecycle phase then
  (each ``dev`` takes 5-15 s to start; one round stays within about a minute).

    python bench/lifecycle.py [--quick] [--markets N] [--rate R] [--before SRC [--rounds N]]

Prints a table and, as its last line, one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, print_table
from marketpulse.reactive.sync.client import LightSyncClient
from marketpulse.testing import DevProcess, summarize_ms

HISTORY_GOAL_S = 5.0
LIFECYCLE_GOAL_MS = 1000.0
DAY_MS = 24 * 3_600_000
SETTLED = ("settled", "finalized")


def spans_a_day(candles: Any) -> bool:
    """Whether ``getCandles``' answer holds at least 24 h of 1-minute candles."""
    return bool(candles) and candles[-1]["start"] - candles[0]["start"] + 60_000 >= DAY_MS


def _watch_days(inbox: Any, out: Any) -> None:
    """In a spawned process: wait for ``(url, tickers)`` on ``inbox``, subscribe to each
    ticker's chart query with the official client, and put ``(ticker, epoch s)`` on ``out``
    the first time its answer spans a day.

    Each subscription's own async iterator, not ``watch_all()``: that one hands over every
    subscription's latest result (20 x 1,500 candles made Python objects) at each change of
    any, which cost this process more CPU than the pushes it waits for."""
    from convex import ConvexClient

    url, tickers = inbox.get()
    client = ConvexClient(url)
    args = {"interval": "1m", "limit": 1500}

    async def one(ticker: str) -> None:
        sub = client.subscribe("marketData:getCandles", {"ticker": ticker, **args})
        async for candles in sub:
            if spans_a_day(candles):
                out.put((ticker, time.time()))
                # Seen: no more 1,500-candle re-runs in the store for this market's trades.
                sub.unsubscribe()
                return

    async def every() -> None:
        await asyncio.gather(*(one(t) for t in tickers))

    asyncio.run(every())


class DayWatch:
    """The history's subscriber (:func:`_watch_days`), spawned before ``dev`` starts so its
    start-up is not counted."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._inbox = ctx.Queue()
        self._out = ctx.Queue()
        self._proc = ctx.Process(target=_watch_days, args=(self._inbox, self._out), daemon=True)
        self._proc.start()

    def start(self, url: str, tickers: list[str]) -> None:
        self._inbox.put((url, tickers))

    def wait(self, tickers: list[str], ready: float, limit_s: float) -> dict[str, float]:
        """Per market, the seconds from ``ready`` (epoch s) until its day of candles was
        pushed; raises TimeoutError after ``limit_s``."""
        done: dict[str, float] = {}
        deadline = time.monotonic() + limit_s
        while len(done) < len(tickers):
            try:
                ticker, at = self._out.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                missing = sorted(set(tickers) - set(done))
                raise TimeoutError(
                    f"no day of 1-minute candles after {limit_s:.0f} s: {missing}"
                ) from None
            done[ticker] = at - ready
        return done

    def close(self) -> None:
        self._proc.kill()
        self._proc.join(5)


class Subscriber(LightSyncClient):
    """A light sync client that notes, per query, the wall-clock ms of each pushed value, and
    the latency of each new ``updatedAt`` (a price change) as the baseline."""

    def __init__(self, url: str) -> None:
        super().__init__(url, keep_transitions=False)
        self.received: dict[int, float] = {}
        self.stamps: dict[int, float] = {}
        self.price_ms: dict[str, list[float]] = {"": [], "_loading": []}
        self.phase: str | None = None
        """Where price latencies go (``""`` or ``"_loading"``); None: not measuring."""

    def _on_transition(self, message: dict[str, Any], now: float, size: int) -> None:
        super()._on_transition(message, now, size)
        at = time.time() * 1000
        for mod in message["modifications"]:
            query_id = mod["queryId"]
            self.received[query_id] = at
            value = self.values.get(query_id)
            if not isinstance(value, dict):
                continue
            stamp = float(value.get("updatedAt") or 0.0)
            if stamp and self.stamps.get(query_id) != stamp:
                self.stamps[query_id] = stamp
                if self.phase is not None:
                    self.price_ms[self.phase].append(at - stamp)


async def lifecycle(
    url: str, sim_url: str, tickers: list[str], history: Callable[[], dict[str, float]]
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Close then settle every market through the simulator: the first half while ``history``
    (run in a thread) still waits for the markets' candles to be written, the rest after.
    The latency of each to the subscriber, the price-change baseline, and ``history``'s
    result."""
    loading = asyncio.ensure_future(asyncio.to_thread(history))
    client = Subscriber(LightSyncClient.ws_url(url))
    await client.connect()
    ids = {
        ticker: await client.subscribe("marketData:getMarket", {"ticker": ticker})
        for ticker in tickers
    }

    # Each market known from its REST metadata and priced live by the stream, so the feed has
    # subscribed: a lifecycle change sent before that is never seen (as on the exchange).
    def streamed(v: Any) -> bool:
        return (
            isinstance(v, dict)
            and v.get("status") not in (None, "unknown")
            and bool(v.get("live"))
            and bool(v.get("updatedAt"))
        )

    for ticker, query_id in ids.items():
        try:
            await client.wait_for(query_id, streamed, timeout=60)
        except TimeoutError:
            value = client.values.get(query_id)
            raise TimeoutError(f"{ticker} not streamed after 60 s: {value}") from None
    client.phase = "_loading"
    out: dict[str, list[float]] = {
        f"{status}{phase}": [] for status in ("closed", "settled") for phase in ("", "_loading")
    }
    rng = random.Random(18)
    missed: list[str] = []
    per_market: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=sim_url, timeout=10.0) as sim:
        for i, ticker in enumerate(tickers):
            if i == len(tickers) // 2:
                per_market = await loading
                client.phase = None
                await asyncio.sleep(1.0)  # the last history writes applied
                client.phase = ""
                await asyncio.sleep(2.0)  # the live feed alone: a baseline before the changes
            # Markets settled while the history is still being written (many candle mutations
            # in the store) are reported apart; after the history, none is in flight.
            phase = "_loading" if not loading.done() else ""
            for status in ("closed", "settled"):

                def shown(v: Any, status: str = status) -> bool:
                    if not isinstance(v, dict):
                        return False
                    if status == "closed":
                        return v["status"] != "active"
                    return (
                        v["status"] in SETTLED
                        and v["settlementValue"] is not None
                        and v["result"] in ("yes", "no")
                    )

                sent = time.time() * 1000
                r = await sim.post(
                    "/_sim/control",
                    json={"action": "set_status", "ticker": ticker, "status": status},
                )
                r.raise_for_status()
                try:
                    await client.wait_for(ids[ticker], shown, timeout=30)
                except TimeoutError:
                    # Never shown: counted (a miss is worse than any latency), the run goes on.
                    value = client.values.get(ids[ticker])
                    print(f"MISSED: {ticker} not shown {status} in 30 s: {value}", flush=True)
                    missed.append(f"{status}{phase} {ticker}")
                    continue
                out[status + phase].append(client.received[ids[ticker]] - sent)
                await asyncio.sleep(0.2 + rng.random() * 0.3)
    out["missed"] = missed  # type: ignore[assignment]
    out["price"] = client.price_ms[""]
    out["price_loading"] = client.price_ms["_loading"]
    await client.close()
    return out, per_market


def history_run(
    markets: int, rate: float, src: str | None, lifecycle_too: bool
) -> tuple[dict[str, Any], dict[str, list[float]] | None]:
    """One fresh ``dev`` (on ``src``'s code if given): its history figures, and with
    ``lifecycle_too`` the lifecycle samples."""
    watch = DayWatch()
    try:
        with tempfile.TemporaryDirectory(prefix="mp-bench-lifecycle-") as tmp:
            launched = time.time()
            with DevProcess(
                Path(tmp) / "dev",
                sim_markets=markets,
                sim_rate=rate,
                pythonpath=[src] if src else (),
            ) as dev:
                ready = time.time()
                load = os.getloadavg()[0]
                sim_url = f"http://127.0.0.1:{dev.simulator_port}"
                tickers = [str(t) for t in httpx.get(f"{sim_url}/_sim/markets").json()["markets"]]
                watch.start(dev.url, tickers)

                def history() -> dict[str, float]:
                    return watch.wait(tickers, ready, 120.0)

                samples = None
                if lifecycle_too:
                    samples, per_market = asyncio.run(lifecycle(dev.url, sim_url, tickers, history))
                else:
                    per_market = history()
    finally:
        watch.close()
    up_s = ready - launched
    all_s = max(per_market.values())
    figures = {
        "code": src or "this checkout",
        "markets": markets,
        "load_1m_at_ready": round(load, 2),
        "dev_up_s": round(up_s, 3),
        "first_from_ready_s": round(min(per_market.values()), 3),
        "all_from_ready_s": round(all_s, 3),
        "all_from_launch_s": round(up_s + all_s, 3),
        "per_market_from_ready": summarize_ms([s * 1000 for s in per_market.values()]),
        "goal_s": HISTORY_GOAL_S,
    }
    return figures, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 markets")
    parser.add_argument("--markets", type=int, default=20, help="markets (each closed, settled)")
    parser.add_argument("--rate", type=float, default=100.0, help="simulator messages/s")
    parser.add_argument("--before", help="another checkout's src/: its history, in turn")
    parser.add_argument("--rounds", type=int, default=1, help="with --before: pairs of runs")
    args = parser.parse_args()
    markets = 4 if args.quick else args.markets

    if args.before:
        before = str(Path(args.before).resolve())
        order: list[str | None] = []
        for i in range(args.rounds):
            order += [before, None] if i % 2 == 0 else [None, before]
        runs = [history_run(markets, args.rate, src, False)[0] for src in order]
        rows = [
            [
                "before" if r["code"] == before else "after",
                r["load_1m_at_ready"],
                r["dev_up_s"],
                r["first_from_ready_s"],
                r["per_market_from_ready"]["p50_ms"] / 1000,
                r["all_from_ready_s"],
                f"<= {HISTORY_GOAL_S:.0f}",
            ]
            for r in runs
        ]
        print_table(
            f"history: 24 h of 1-minute candles pushed for all {markets} markets, in run order",
            ["code", "load 1m", "dev up (s)", "first (s)", "p50 (s)", "all, from ready (s)",
             "goal (s)"],
            rows,
        )  # fmt: skip
        b = statistics.median(r["all_from_ready_s"] for r in runs if r["code"] == before)
        a = statistics.median(r["all_from_ready_s"] for r in runs if r["code"] != before)
        print(f"all markets from ready, median: before {b:.2f} s, after {a:.2f} s, x{b / a:.2f}")
        emit(
            {
                "history_runs": runs,
                "before": before,
                "before_all_median_s": round(b, 3),
                "after_all_median_s": round(a, 3),
                "before_over_after": round(b / a, 2),
                "goal_s": HISTORY_GOAL_S,
            }
        )
        return

    history, samples = history_run(markets, args.rate, None, True)
    assert samples is not None
    figures: dict[str, Any] = {"history": history, "missed": samples.pop("missed")}
    rows = []
    for key, name in (
        ("settled", "settled (with value)"),
        ("closed", "closed"),
        ("settled_loading", "settled, history loading"),
        ("closed_loading", "closed, history loading"),
        ("baseline", "baseline: price change"),
        ("baseline_loading", "baseline: price change, history loading"),
    ):
        values = samples[key.replace("baseline", "price")]
        if not values:
            continue
        fig = summarize_ms(values)
        baseline = key.startswith("baseline")
        figures[key] = fig if baseline else {**fig, "goal_ms": LIFECYCLE_GOAL_MS}
        goal = "-" if baseline else f"<= {LIFECYCLE_GOAL_MS:.0f}"
        rows.append(
            [name, fig["n"], fig["p50_ms"], fig["p99_ms"], fig["p999_ms"], fig["max_ms"], goal]
        )

    up_s, all_s = history["dev_up_s"], history["all_from_ready_s"]
    print_table(
        f"history: 24 h of 1-minute candles pushed for all {markets} markets",
        ["dev up (s)", "all, from ready (s)", "all, from launch (s)", "per market p50 (ms)",
         "per market max (ms)", "load 1m", "goal (s)"],
        [[up_s, all_s, up_s + all_s, history["per_market_from_ready"]["p50_ms"],
          history["per_market_from_ready"]["max_ms"], history["load_1m_at_ready"],
          f"<= {HISTORY_GOAL_S:.0f} from ready"]],
    )  # fmt: skip
    print_table(
        "lifecycle: control request -> getMarket pushed to a subscribed sync client",
        ["change", "n", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "goal ms"],
        rows,
    )
    emit(figures)


if __name__ == "__main__":
    main()
