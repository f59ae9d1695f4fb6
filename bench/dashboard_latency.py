"""Dashboard latency: a trade leaves its source -> that trade is in the browser's DOM.

Headless Chromium (Debian's) opens the dashboard on one market. In the page, a
MutationObserver on the trades panel notes when each new trade's row enters the DOM
(``performance.timeOrigin + performance.now()``) and, with requestAnimationFrame, when the next
frame starts; the trade's ``timestamp`` is when it left its source, so the difference is its
latency (same machine, same clock). Two sources, in the same run:

* ``dev``: ``marketpulse dev`` on the simulator. The simulator stamps each trade with the
  wall-clock ms at which it generates and sends it (``ts_ms``, whole ms: figures are up to 1 ms
  high); the path is simulator -> Kalshi WS -> worker (Temporal activity, coalesced batch) ->
  applyUpdates -> store -> sync WebSocket -> convex/react -> DOM.
* ``serve``: ``marketpulse serve`` with trades written one at a time by applyUpdates over HTTP
  with the admin key, stamped just before the send: the store and browser alone.

Baselines: the official PyPI ``convex`` client subscribed to the same market's getRecentTrades
(receipt time, the push without a browser), and for ``serve`` the applyUpdates round trip.

    python bench/dashboard_latency.py [--quick] [--trades N] [--source dev|serve|both]

Prints a table and, as its last line, one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _common import emit  # noqa: E402
from marketpulse.testing import (  # noqa: E402
    AdminClient,
    DevProcess,
    StoreProcess,
    SyntheticFeed,
    percentile,
)

CHROMIUM = "/usr/bin/chromium"

OBSERVER_JS = """
(prefix) => {
  window.__lat = [];
  const seen = new Set([...document.querySelectorAll('[data-testid=trade]')].map(e => e.dataset.tradeId));
  const root = document.querySelector('[data-testid=trades]');
  new MutationObserver(() => {
    const now = performance.timeOrigin + performance.now();
    for (const li of root.querySelectorAll('[data-testid=trade]')) {
      const id = li.dataset.tradeId;
      if (seen.has(id)) continue;
      seen.add(id);
      if (!id.startsWith(prefix)) continue;
      const entry = { id, dom: now - Number(li.dataset.ts), frame: null };
      window.__lat.push(entry);
      requestAnimationFrame(() => {
        entry.frame = performance.timeOrigin + performance.now() - Number(li.dataset.ts);
      });
    }
  }).observe(root, { childList: true, subtree: true });
}
"""


def client_receipts(url: str, ticker: str, prefix: str, n: int, ready: Any, out: Any) -> None:
    """In a child process: latency (ms) of each new trade at an official Python client.

    A process, not a thread: the client's blocking iterator holds the GIL while it waits.
    """
    from convex import ConvexClient

    got: dict[str, float] = {}
    seen: set[str] | None = None
    sub = ConvexClient(url).subscribe("marketData:getRecentTrades", {"ticker": ticker, "limit": 50})
    for value in sub:
        now = time.time() * 1000
        ids = {str(t["id"]) for t in value or []}
        if seen is None:  # trades already stored when we subscribed are not timed
            seen = ids
            ready.set()
            continue
        for trade in value or []:
            tid = str(trade["id"])
            if tid.startswith(prefix) and tid not in seen and tid not in got:
                got[tid] = now - float(trade["timestamp"])
        if len(got) >= n:
            break
    out.put(got)


class ClientBaseline:
    """The Python-client receipt baseline, in a spawned process."""

    def __init__(self, url: str, ticker: str, prefix: str, n: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._out = ctx.Queue()
        ready = ctx.Event()
        self._proc = ctx.Process(
            target=client_receipts, args=(url, ticker, prefix, n, ready, self._out), daemon=True
        )
        self._proc.start()
        if not ready.wait(60):
            self._proc.terminate()
            raise RuntimeError("the Python client got no first result")

    def result(self, timeout: float) -> list[float]:
        try:
            got: dict[str, float] = self._out.get(timeout=timeout)
        except queue.Empty:
            got = {}
            print("warning: the Python client did not see every trade in time", file=sys.stderr)
        self._proc.terminate()
        self._proc.join(5)
        return list(got.values())


def in_browser(
    url: str, ticker: str, prefix: str, n: int, drive: Callable[[], None]
) -> list[dict[str, Any]]:
    """Open the dashboard on ``ticker``, run ``drive``, and return n observed trades' latencies."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{url}/?market={ticker}")
            page.wait_for_selector("[data-testid=connection][data-state=connected]", timeout=60_000)
            page.wait_for_selector(
                "[data-testid=trades] ol, [data-testid=trades-empty]", timeout=60_000
            )
            time.sleep(0.5)  # let the first renders and the chart settle
            page.evaluate(OBSERVER_JS, prefix)
            drive()
            page.wait_for_function(
                f"window.__lat.length >= {n} && window.__lat.slice(0, {n}).every(e => e.frame !== null)",
                timeout=180_000,
                polling=100,
            )
            lat: list[dict[str, Any]] = page.evaluate(f"window.__lat.slice(0, {n})")
            return lat
        finally:
            browser.close()


def run_serve(n: int, rate: float, with_client: bool) -> dict[str, list[float]]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        StoreProcess(Path(tmp) / "store.sqlite") as store,
    ):
        feed = SyntheticFeed(6, seed=3, closed=0)
        writer = AdminClient(store.url, store.admin_key)
        feed.seed_store(writer, history_trades=5)
        market = feed.markets[0]
        client = ClientBaseline(store.url, market.ticker, "bench-", n) if with_client else None
        rtts: list[float] = []

        def drive() -> None:
            period = 1.0 / rate
            start = time.perf_counter()
            for i in range(n):
                delay = start + i * period - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                trade = feed.trade(market, time.time() * 1000, trade_id=f"bench-{i}")
                t0 = time.perf_counter()
                writer.mutation("marketData:applyUpdates", {"batch": {"trades": [trade]}})
                rtts.append((time.perf_counter() - t0) * 1000)

        lat = in_browser(store.url, market.ticker, "bench-", n, drive)
        receipts = client.result(30) if client else []
        writer.close()
    return {
        "dom": [float(e["dom"]) for e in lat],
        "frame": [float(e["frame"]) for e in lat],
        "client": receipts,
        "http": rtts,
    }


def run_dev(n: int, sim_rate: float, with_client: bool) -> dict[str, list[float]]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        DevProcess(Path(tmp) / "dev", sim_markets=2, sim_rate=sim_rate) as dev,
    ):
        # The worker writes the markets once its stream activity starts: wait for them.
        markets: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        with AdminClient(dev.url, timeout=10, format="json") as reader:
            while not markets and time.monotonic() < deadline:
                markets = (
                    reader.call("query", "marketData:listMarkets", {"limit": 10}).get("value") or []
                )
                time.sleep(0.2)
        if not markets:
            raise RuntimeError("marketpulse dev wrote no market within 60 s")
        ticker = markets[0]["ticker"]
        client = ClientBaseline(dev.url, ticker, "", n) if with_client else None
        lat = in_browser(dev.url, ticker, "", n, lambda: None)
        receipts = client.result(120) if client else []
    return {
        "dom": [float(e["dom"]) for e in lat],
        "frame": [float(e["frame"]) for e in lat],
        "client": receipts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 trades per source.")
    parser.add_argument("--trades", type=int, default=None, help="Trades per source.")
    parser.add_argument("--rate", type=float, default=50.0, help="serve: trades written per s.")
    parser.add_argument("--sim-rate", type=float, default=400.0, help="dev: simulator msgs/s.")
    parser.add_argument("--source", choices=["dev", "serve", "both"], default="both")
    parser.add_argument("--no-client", action="store_true", help="Skip the Python-client baseline.")
    args = parser.parse_args()
    n = args.trades or (200 if args.quick else 1000)

    results: dict[str, dict[str, list[float]]] = {}
    if args.source in ("dev", "both"):
        results["dev"] = run_dev(n, args.sim_rate, not args.no_client)
    if args.source in ("serve", "both"):
        results["serve"] = run_serve(n, args.rate, not args.no_client)

    labels = {
        "http": "applyUpdates HTTP round trip",
        "client": "official Python client receipt (baseline)",
        "dom": "trade in the browser DOM",
        "frame": "trade on the next browser frame",
    }
    print(f"dashboard latency: trade sent -> trade on screen, {n} trades per source, one market")
    print(f"{'source':<7}{'measure':<44}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    figures: dict[str, Any] = {"bench": "dashboard_latency", "trades": n}
    for source, series in results.items():
        for name in ("http", "client", "dom", "frame"):
            values = series.get(name)
            if values is None:
                continue
            if values:
                p50, p99 = percentile(values, 50), percentile(values, 99)
                print(
                    f"{source:<7}{labels[name]:<44}{len(values):>6}{p50:>9.2f}{p99:>9.2f}{max(values):>9.2f}"
                )
                figures[f"{source}_{name}_p50_ms"] = round(p50, 3)
                figures[f"{source}_{name}_p99_ms"] = round(p99, 3)
            else:
                print(f"{source:<7}{labels[name]:<44}{0:>6}{'-':>9}{'-':>9}{'-':>9}")
        figures[f"{source}_missing"] = n - len(series["dom"])
    figures["sim_rate"] = args.sim_rate
    figures["serve_rate_per_s"] = args.rate
    emit(figures)


if __name__ == "__main__":
    main()
