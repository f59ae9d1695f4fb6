"""History from the first second, and lifecycle within a second (issue 18).

A real ``marketpulse dev`` (Temporal, store, simulator, worker, stream) on a fresh data dir:

* **history**: from the launch of ``dev`` and from its ready file, the time until
  ``marketData:getCandles`` serves at least 24 h of 1-minute candles for every market (the
  stream fetches them over REST as it adds each market). Goal: 5 s.
* **lifecycle**: one light sync client (the Convex wire protocol) subscribed to ``getMarket`` of
  every market. Each market in turn is closed, then settled, through the simulator's control
  API (``POST /_sim/control`` ``set_status``); the figure is the time from just before that
  request until the subscriber's ``getMarket`` shows the status (and, when settled, the
  settlement value and result). The first half of the markets go while the history is still
  being written (reported as "history loading"), the rest after it, on the live feed alone.
  Goal: 1 s.
* **baseline** (same run, same subscriber): an ordinary price change, from the stamp the
  simulator put in its frame (``updatedAt``) to its receipt by the same subscriber.

    python bench/lifecycle.py [--quick] [--markets N] [--rate R]

Prints a table and, as its last line, one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import random
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
from marketpulse.testing import AdminClient, DevProcess, summarize_ms

HISTORY_GOAL_S = 5.0
LIFECYCLE_GOAL_MS = 1000.0
DAY_MS = 24 * 3_600_000
SETTLED = ("settled", "finalized")


def wait_for_history(
    store: AdminClient, tickers: list[str], ready: float, limit_s: float
) -> dict[str, float]:
    """Poll ``getCandles`` until each market serves 24 h of 1-minute candles; per market, the
    seconds from ``ready`` at which it first did (negative never: the first poll is at ready)."""
    done: dict[str, float] = {}
    deadline = ready + limit_s
    while len(done) < len(tickers):
        if time.monotonic() > deadline:
            missing = sorted(set(tickers) - set(done))
            raise TimeoutError(f"no day of 1-minute candles after {limit_s:.0f} s: {missing}")
        for ticker in tickers:
            if ticker in done:
                continue
            candles = store.query(
                "marketData:getCandles", {"ticker": ticker, "interval": "1m", "limit": 1500}
            )
            if candles and candles[-1]["start"] - candles[0]["start"] + 60_000 >= DAY_MS:
                done[ticker] = time.monotonic() - ready
        # Each poll reads up to 1,500 candles a market: often enough for the 5 s goal, rarely
        # enough not to slow the store that is writing the history being measured.
        time.sleep(0.25)
    return done


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 markets")
    parser.add_argument("--markets", type=int, default=20, help="markets (each closed, settled)")
    parser.add_argument("--rate", type=float, default=100.0, help="simulator messages/s")
    args = parser.parse_args()
    markets = 4 if args.quick else args.markets

    with tempfile.TemporaryDirectory(prefix="mp-bench-lifecycle-") as tmp:
        launched = time.monotonic()
        with DevProcess(Path(tmp) / "dev", sim_markets=markets, sim_rate=args.rate) as dev:
            ready = time.monotonic()
            store = AdminClient(dev.url, timeout=10.0, format="json")
            sim_url = f"http://127.0.0.1:{dev.simulator_port}"
            try:
                tickers = [str(t) for t in httpx.get(f"{sim_url}/_sim/markets").json()["markets"]]
                samples, per_market = asyncio.run(
                    lifecycle(
                        dev.url,
                        sim_url,
                        tickers,
                        lambda: wait_for_history(store, tickers, ready, 120.0),
                    )
                )
            finally:
                store.close()

    up_s = ready - launched
    all_ready_s = max(per_market.values())
    history = {
        "markets": markets,
        "dev_up_s": round(up_s, 3),
        "first_from_ready_s": round(min(per_market.values()), 3),
        "all_from_ready_s": round(all_ready_s, 3),
        "all_from_launch_s": round(up_s + all_ready_s, 3),
        "per_market_from_ready": summarize_ms([s * 1000 for s in per_market.values()]),
        "goal_s": HISTORY_GOAL_S,
    }
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

    print_table(
        f"history: 24 h of 1-minute candles for all {markets} markets",
        ["dev up (s)", "all, from ready (s)", "all, from launch (s)", "per market p50 (ms)",
         "per market max (ms)", "goal (s)"],
        [[up_s, all_ready_s, up_s + all_ready_s, history["per_market_from_ready"]["p50_ms"],
          history["per_market_from_ready"]["max_ms"], f"<= {HISTORY_GOAL_S:.0f} from ready"]],
    )  # fmt: skip
    print_table(
        "lifecycle: control request -> getMarket pushed to a subscribed sync client",
        ["change", "n", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "goal ms"],
        rows,
    )
    emit(figures)


if __name__ == "__main__":
    main()
