"""Paginated subscriptions through the official npm client over 10,000 trades under churn.

``ConvexClient.onPaginatedUpdate_experimental`` (the client code ``usePaginatedQuery`` shares)
loads a newest-first trade history page by page while trades are inserted at the top and in
the middle and others are deleted. Every update must be the history's rows in order, with no
duplicate and no gap; the client's pages must chain (each starts at the previous one's
``continueCursor``), and grown pages must have been split by the client (``splitCursor``).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from marketpulse.testing import AdminClient, StoreProcess

from .js_driver import JsDriver, node_available

needs_node = pytest.mark.skipif(
    not node_available(), reason="node and tests/js/node_modules are needed (npm ci in tests/js)"
)

TICKER = "KX-PAGES"
TRADES = 10_000
PAGE = 100


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StoreProcess]:
    with StoreProcess(
        tmp_path / "store.sqlite", functions="app_functions", pythonpath=[Path(__file__).parent]
    ) as proc:
        yield proc


def check_update(event: dict[str, Any], permanent: set[float]) -> None:
    """Ordered newest first, no duplicate, and no permanent row missing from the range."""
    rows: list[float] = event["results"]
    assert all(a > b for a, b in pairwise(rows)), "out of order or duplicate"
    if rows:
        lo, hi = rows[-1], rows[0]
        missing = {s for s in permanent if lo <= s <= hi} - set(rows)
        assert not missing, f"gap: {sorted(missing)[:10]}"
    pages = event["pages"]
    for a, b in pairwise(pages):
        if a["continueCursor"] is not None:
            assert b["cursor"] == a["continueCursor"], "pages do not chain"


@needs_node
def test_paginated_subscription_stays_contiguous_while_trades_change(
    store: StoreProcess,
) -> None:
    rnd = random.Random(17)
    with AdminClient(store.url, timeout=30) as admin:
        for start in range(0, TRADES, 1000):
            admin.mutation(
                "history:insert",
                {"ticker": TICKER, "seqs": [float(s) for s in range(start, start + 1000)]},
            )
    doomed = set(rnd.sample([float(s) for s in range(TRADES)], 300))
    permanent = {float(s) for s in range(TRADES)} - doomed

    def churn(stop: threading.Event) -> None:
        # New trades at the top (the first page grows), some in the middle, and deletions.
        top = float(TRADES)
        queue = sorted(doomed)
        rnd_c = random.Random(3)
        with AdminClient(store.url, timeout=30) as client:
            while not stop.is_set() and (queue or top < TRADES + 1500):
                new = [top + i for i in range(rnd_c.randint(1, 20))]
                top += len(new)
                new += [rnd_c.randrange(TRADES) + rnd_c.random() for _ in range(5)]
                client.mutation("history:insert", {"ticker": TICKER, "seqs": new})
                if queue:
                    gone = [
                        queue.pop(rnd_c.randrange(len(queue))) for _ in range(min(10, len(queue)))
                    ]
                    client.mutation("history:remove", {"ticker": TICKER, "seqs": gone})
                stop.wait(0.01)

    js = JsDriver(store.url)
    stop = threading.Event()
    churner = threading.Thread(target=churn, args=(stop,), daemon=True)
    try:
        js.send(
            cmd="paginate",
            id="h",
            path="history:page",
            args={"ticker": TICKER},
            initialNumItems=PAGE,
            field="seq",
        )
        event = js.wait_for(lambda e: e.get("id") == "h" and e["status"] == "CanLoadMore")
        assert event["results"][0] == TRADES - 1 and len(event["results"]) == PAGE
        churner.start()
        updates = 0
        loads = 0
        max_pages = 0
        while event["status"] != "Exhausted":
            assert loads < 400, "never exhausted"
            js.send(cmd="loadMore", id="h", numItems=PAGE)
            ok = js.wait_for(lambda e: e.get("event") == "loadMore")["ok"]
            assert ok, (loads, event["status"], event["pages"][-3:])
            loads += 1
            # Everything up to the loadMore (its own LoadingMore update included), checked;
            # then the first update with the new page loaded.
            for e in [e for e in js.backlog if e.get("id") == "h"]:
                js.backlog.remove(e)
                check_update(e, permanent)
                updates += 1
            event = js.wait_for(
                lambda e: e.get("id") == "h" and e["status"] in ("CanLoadMore", "Exhausted"),
                timeout=30,
            )
            check_update(event, permanent)
            updates += 1
            max_pages = max(max_pages, len(event["pages"]))
        churner.join(60)
        assert not churner.is_alive()
        stop.set()
        with AdminClient(store.url, timeout=30) as admin:
            truth = admin.query("history:seqs", {"ticker": TICKER})
        # Settled: the loaded pages hold exactly the whole history, in order.
        final = event
        for _ in range(200):
            if final["results"] == truth:
                break
            final = js.wait_for(lambda e: e.get("id") == "h", timeout=10)
            check_update(final, permanent)
        assert final["results"] == truth
        # Let splits in flight finish (no update for a second), then look at the pages.
        while True:
            try:
                final = js.wait_for(lambda e: e.get("id") == "h", timeout=1.0)
            except AssertionError:
                break
            check_update(final, permanent)
        assert final["results"] == truth
        pages = final["pages"]
        assert all(p["n"] is not None for p in pages)
        # Grown pages were split: more pages than were ever loaded, none far over 2x the size.
        assert len(pages) > loads + 1, (len(pages), loads)
        assert max(p["n"] for p in pages) <= 2 * PAGE
        print(f"loads={loads} pages={len(pages)} updates={updates} rows={len(truth)}")
        assert pages[-1]["isDone"] and not any(p["isDone"] for p in pages[:-1])
        assert updates > loads
    finally:
        stop.set()
        js.close()
