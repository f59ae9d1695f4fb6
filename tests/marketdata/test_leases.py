"""Stream leases: the store decides when a stream's books and prices stop being live."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from marketpulse.marketdata import _leases, functions
from marketpulse.reactive.engine import SchedulerRunner

from .conftest import Store

T0 = 1_700_000_000_000.0


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The store's clock (epoch ms), moved by the test."""
    now = [T0]
    monkeypatch.setattr(functions, "_now_ms", lambda: now[0])
    return now


def _book(ticker: str, ts: float) -> dict[str, Any]:
    return {"ticker": ticker, "ts": ts, "valid": True, "bids": [[0.4, 1.0]], "asks": [[0.6, 2.0]]}


def _price(ticker: str, ts: float) -> dict[str, Any]:
    return {"ticker": ticker, "ts": ts, "yesBid": 0.4, "yesAsk": 0.6}


async def _stream_batch(store: Store, stream: str, ts: float, *tickers: str, **extra: Any) -> Any:
    return await store.apply(
        streamId=stream,
        books=[_book(t, ts) for t in tickers],
        prices=[_price(t, ts) for t in tickers],
        **extra,
    )


async def _status(store: Store, stream: str, ts: float) -> None:
    await store.mutate(
        "reportStreamStatus",
        status={"streamId": stream, "state": "connected", "markets": ["A"], "updatedAt": ts},
    )


async def test_a_renewed_lease_serves_its_books_as_live(store: Store, clock: list[float]) -> None:
    r = await _stream_batch(store, "s1", T0, "A", leaseMs=3000)
    assert r["revived"] == 1  # the first renewal of a stream revives it
    assert store.query("getOrderbook", ticker="A")["live"] is True
    assert store.query("getPrice", ticker="A")["live"] is True
    assert store.query("listMarkets")[0]["live"] is True
    clock[0] = T0 + 2999
    assert await store.mutate("expireLeases") == {"expired": 0, "stale": 0, "more": False}
    assert store.query("getOrderbook", ticker="A") is not None


async def test_a_lapsed_lease_makes_books_null_and_prices_stale(
    store: Store, clock: list[float]
) -> None:
    await _stream_batch(store, "s1", T0, "A", "B", leaseMs=3000)
    await _stream_batch(store, "s2", T0, "C", leaseMs=3000)
    await _status(store, "s1", T0)
    book_sub, book_listener = store.subscribe("getOrderbook", ticker="A")
    clock[0] = T0 + 2000
    await _stream_batch(store, "s2", T0 + 2000, "C", leaseMs=3000)  # s2 keeps renewing
    clock[0] = T0 + 3001
    assert await store.mutate("expireLeases") == {"expired": 1, "stale": 4, "more": False}
    assert store.query("getOrderbook", ticker="A") is None
    assert store.query("getOrderbook", ticker="B") is None
    assert store.query("getOrderbook", ticker="C") is not None
    assert store.query("getPrice", ticker="A")["live"] is False
    assert store.query("getMarket", ticker="A")["live"] is False
    assert {m["ticker"]: m["live"] for m in store.query("listMarkets")} == {
        "A": False,
        "B": False,
        "C": True,
    }
    [status] = store.query("getStreamStatus")
    assert (status["state"], status["live"]) == ("stale", False)
    assert book_listener.updates >= 1 and book_listener.values[-1] is None
    store.engine.unsubscribe(book_sub, book_listener)
    # Expiring again changes nothing.
    assert await store.mutate("expireLeases") == {"expired": 0, "stale": 0, "more": False}


async def test_renewing_a_dead_lease_revives_only_what_is_written(
    store: Store, clock: list[float]
) -> None:
    await _stream_batch(store, "s1", T0, "A", "B", leaseMs=1000)
    clock[0] = T0 + 5000
    await store.mutate("expireLeases")
    r = await _stream_batch(store, "s1", T0 + 5000, "A", leaseMs=1000)
    assert r["revived"] == 1
    assert store.query("getOrderbook", ticker="A")["live"] is True
    assert store.query("getOrderbook", ticker="B") is None  # not re-sent yet: still stale
    r = await _stream_batch(store, "s1", T0 + 5000, "B", leaseMs=1000)
    assert r["revived"] == 0
    assert store.query("getOrderbook", ticker="B") is not None


async def test_a_batch_without_lease_ms_writes_at_the_lease_s_liveness(
    store: Store, clock: list[float]
) -> None:
    await _stream_batch(store, "s1", T0, "A", leaseMs=1000)
    clock[0] = T0 + 2000
    await store.mutate("expireLeases")
    # A backfill or an invalidation mark does not renew: what it writes stays stale.
    await _stream_batch(store, "s1", T0 + 2000, "A")
    assert store.query("getOrderbook", ticker="A") is None
    assert store.query("getPrice", ticker="A")["live"] is False


async def test_a_store_start_kills_every_lease(store: Store, clock: list[float]) -> None:
    await _stream_batch(store, "s1", T0, "A", leaseMs=60_000)
    await _status(store, "s1", T0)
    assert await store.mutate("resetLeases") == {"expired": 1, "stale": 2, "more": False}
    assert store.query("getOrderbook", ticker="A") is None
    assert store.query("getStreamStatus")[0]["state"] == "stale"
    assert (await _stream_batch(store, "s1", T0 + 1, "A", leaseMs=3000))["revived"] == 1
    assert store.query("getOrderbook", ticker="A") is not None
    [status] = store.query("getStreamStatus")
    assert (status["state"], status["live"]) == ("connected", True)


async def test_a_large_stream_is_marked_stale_over_several_runs(
    store: Store, clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_leases, "STALE_BATCH", 3)
    await _stream_batch(store, "s1", T0, "A", "B", "C", "D", leaseMs=1000)  # 8 documents
    clock[0] = T0 + 2000
    runs = [await store.mutate("expireLeases") for _ in range(4)]
    assert [(r["expired"], r["stale"], r["more"]) for r in runs] == [
        (1, 3, True),
        (0, 3, True),
        (0, 2, False),
        (0, 0, False),
    ]
    assert all(store.query("getOrderbook", ticker=t) is None for t in "ABCD")
    # A start, likewise: the at-start runner calls again while it answers more.
    assert (await _stream_batch(store, "s1", T0 + 2000, "A", "B", leaseMs=1000))["revived"]
    first = await store.mutate("resetLeases")
    assert (first["expired"], first["stale"], first["more"]) == (1, 3, True)
    assert (await store.mutate("resetLeases"))["more"] is False
    assert store.query("getOrderbook", ticker="A") is None


async def test_a_lapse_schedules_the_runs_that_mark_the_rest_stale(
    store: Store, clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_leases, "STALE_BATCH", 3)
    tickers = [f"M{i}" for i in range(10)]  # 20 documents: 7 runs
    await _stream_batch(store, "s1", T0, *tickers, leaseMs=1000)
    clock[0] = T0 + 2000
    runner = SchedulerRunner(store.engine)
    await runner.start()
    try:
        first = await store.mutate("expireLeases")  # the cron's run; no other comes
        assert (first["expired"], first["more"]) == (1, True)

        def all_stale() -> bool:
            return all(store.query("getOrderbook", ticker=t) is None for t in tickers)

        for _ in range(500):
            if all_stale():
                break
            await asyncio.sleep(0.01)
        assert all_stale()
    finally:
        await runner.stop()


async def test_writes_of_no_stream_are_live_and_never_expire(
    store: Store, clock: list[float]
) -> None:
    await store.apply(books=[_book("A", T0)], prices=[_price("A", T0)])
    clock[0] = T0 + 3_600_000
    await store.mutate("expireLeases")
    await store.mutate("resetLeases")
    assert store.query("getOrderbook", ticker="A")["live"] is True
    assert store.query("getPrice", ticker="A")["live"] is True


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ({"leaseMs": 3000}, "a lease needs the batch's streamId"),
        ({"streamId": "s", "leaseMs": 10}, "expected 500 to 60000 ms"),
        ({"streamId": "s", "leaseMs": 600_000}, "expected 500 to 60000 ms"),
        ({"streamId": "", "leaseMs": 3000}, "batch.streamId"),
    ],
)
async def test_bad_lease_arguments_are_refused(
    store: Store, batch: dict[str, Any], message: str
) -> None:
    assert message in await store.mutate_error("applyUpdates", batch=batch)
