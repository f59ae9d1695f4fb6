"""KalshiFeed over real sockets against a small scripted exchange (tests/kalshi/stub_exchange.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from marketpulse.kalshi import (
    BookInvalidated,
    BookUpdated,
    FeedState,
    KalshiCredentials,
    KalshiFeed,
    TradeMessage,
    generate_private_key_pem,
)
from polling import until

from .stub_exchange import StubExchange

A, B, C = "KXBTCD-25AUG0517-T114999.99", "KXETHD-25AUG0517-T3749.99", "KXGREENLAND-29"


@pytest.fixture
async def exchange() -> AsyncIterator[StubExchange]:
    ex = StubExchange()
    ex.add_market(A, {"0.4000": "10", "0.4100": "3"}, {"0.5500": "5"})
    ex.add_market(B, {}, {"0.9925": "7.5"})
    ex.add_market(C, {"0.0050": "100"}, {})
    await ex.start()
    yield ex
    await ex.stop()


def books_match(feed: KalshiFeed, ex: StubExchange, tickers: list[str]) -> bool:
    return all(feed.books[t].valid and feed.books[t].levels() == ex.levels(t) for t in tickers)


async def test_signed_connect_snapshots_and_deltas(exchange: StubExchange) -> None:
    async with KalshiFeed(exchange.url, exchange.creds, [A, B, C], reconnect_delay=0.05) as feed:
        await until(lambda: books_match(feed, exchange, [A, B, C]))
        assert feed.books[B].bids() == [] and feed.books[C].asks() == []  # omitted sides
        await exchange.delta(A, "yes", "0.4100", "-3")
        await exchange.delta(A, "no", "0.5700", "2.25")
        await exchange.delta(C, "yes", "0.0050", "-100")
        await until(lambda: books_match(feed, exchange, [A, B, C]))
        assert str(feed.books[A].best_ask) == "0.4300"
        events = feed.drain()
        assert any(isinstance(e, FeedState) and e.state == "connected" for e in events)
        updated = [e.ticker for e in events if isinstance(e, BookUpdated)]
        assert sorted(updated) == sorted(set(updated))  # coalesced: one per ticker
        subs = [c for c in exchange.commands if c["cmd"] == "subscribe"]
        assert [s["params"]["channels"] for s in subs] == [
            ["orderbook_delta"],
            ["ticker"],
            ["trade"],
        ]
        assert feed.stats.gaps == 0 and feed.stats.reconnects == 0 and feed.stats.last_frame_at


async def test_debug_logs_of_the_handshake_hide_the_key_id_and_signature(
    exchange: StubExchange, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with KalshiFeed(exchange.url, exchange.creds, [A], reconnect_delay=0.05) as feed:
        await until(lambda: books_match(feed, exchange, [A]))
    # The client's lines (the stub exchange is a plain websockets server of the test's own).
    client = [r.getMessage() for r in caplog.records if r.name.startswith("websockets.client")]
    assert "> KALSHI-ACCESS-SIGNATURE: [redacted]" in client, client
    assert "> KALSHI-ACCESS-KEY: [redacted]" in client, client
    assert not any(exchange.creds.key_id in line for line in client)


@pytest.mark.parametrize("signed", ["unsigned", "wrong key"])
async def test_refused_handshake_keeps_retrying(exchange: StubExchange, signed: str) -> None:
    creds = (
        None
        if signed == "unsigned"
        else KalshiCredentials.from_pem("stub-key", generate_private_key_pem())
    )
    feed = KalshiFeed(exchange.url, creds, [A], reconnect_delay=0.05, max_reconnect_delay=0.1)
    states: list[FeedState] = []
    async with feed:
        async with asyncio.timeout(10):
            async for ev in feed:
                if isinstance(ev, FeedState):
                    states.append(ev)
                if exchange.handshakes_refused >= 2 and any(
                    s.reason and "401" in s.reason for s in states
                ):
                    break
    assert exchange.connections_total == 0
    assert not feed.books[A].valid
    assert any("handshake rejected: HTTP 401" in (s.reason or "") for s in states)


async def test_gap_and_duplicate_recover_with_get_snapshot(exchange: StubExchange) -> None:
    async with KalshiFeed(exchange.url, exchange.creds, [A, B, C], reconnect_delay=0.05) as feed:
        await until(lambda: books_match(feed, exchange, [A, B, C]))
        await exchange.delta(A, "yes", "0.4000", "1", skip=True)
        await until(lambda: feed.stats.gaps == 1)
        await until(lambda: books_match(feed, exchange, [A, B, C]))
        await exchange.delta(B, "no", "0.9925", "1", duplicate=True)
        await until(lambda: feed.stats.duplicates == 1)
        await until(lambda: books_match(feed, exchange, [A, B, C]))
        actions = [
            c["params"]["action"] for c in exchange.commands if c["cmd"] == "update_subscription"
        ]
        assert actions.count("get_snapshot") == 2
        assert feed.stats.reconnects == 0 and feed.stats.recoveries_completed == 2


async def test_reconnect_resubscribes_with_new_sids(exchange: StubExchange) -> None:
    async with KalshiFeed(exchange.url, exchange.creds, [A, B], reconnect_delay=0.05) as feed:
        await until(lambda: books_match(feed, exchange, [A, B]))
        await exchange.drop_all()
        await exchange.delta(A, "yes", "0.3000", "4")  # happens while the client is away
        await until(lambda: feed.stats.reconnects == 1)
        await until(lambda: books_match(feed, exchange, [A, B]))
        assert exchange.connections_total == 2
        assert sum(1 for c in exchange.commands if c["cmd"] == "subscribe") == 6
        assert feed.state == "connected" and feed.stats.gaps == 0


async def test_add_and_remove_markets_live(exchange: StubExchange) -> None:
    async with KalshiFeed(exchange.url, exchange.creds, [A], reconnect_delay=0.05) as feed:
        await until(lambda: books_match(feed, exchange, [A]))
        snaps_before = feed.stats.snapshots
        await feed.add_markets([B, C])
        await until(lambda: books_match(feed, exchange, [A, B, C]))
        assert feed.stats.snapshots == snaps_before + 2  # A was not re-snapshotted
        await feed.remove_markets([B])
        assert B not in feed.books
        await exchange.delta(A, "yes", "0.4000", "1")
        await until(lambda: books_match(feed, exchange, [A, C]))
        events = feed.drain()
        assert any(
            isinstance(e, BookInvalidated) and e.ticker == B and e.reason == "removed"
            for e in events
        )
        upd = [c["params"] for c in exchange.commands if c["cmd"] == "update_subscription"]
        assert {"sids": [1], "market_tickers": [B, C], "action": "add_markets"} in upd
        assert {"sids": [1], "market_tickers": [B], "action": "delete_markets"} in upd
        assert feed.stats.reconnects == 0


async def test_quiet_but_live_connection_is_not_stale(exchange: StubExchange) -> None:
    async with KalshiFeed(
        exchange.url, exchange.creds, [A], reconnect_delay=0.05, stale_after=0.4
    ) as feed:
        await until(lambda: books_match(feed, exchange, [A]))
        await asyncio.sleep(2.0)  # five stale periods with no data: the peer answers pings
        assert feed.stats.stale_reconnects == 0
        assert feed.stats.reconnects == 0


async def test_hung_peer_is_stale_and_reconnects(exchange: StubExchange) -> None:
    async with KalshiFeed(
        exchange.url, exchange.creds, [A], reconnect_delay=0.05, stale_after=0.4
    ) as feed:
        await until(lambda: books_match(feed, exchange, [A]))
        exchange.freeze()
        await until(lambda: feed.stats.stale_reconnects >= 1 and feed.stats.reconnects >= 1)
        await until(lambda: books_match(feed, exchange, [A]))


async def test_slow_consumer_is_bounded_and_coalesced(exchange: StubExchange) -> None:
    feed = KalshiFeed(
        exchange.url, exchange.creds, [A, B], reconnect_delay=0.05, trade_queue_size=50
    )
    async with feed:
        await until(lambda: books_match(feed, exchange, [A, B]))
        feed.drain()
        for i in range(400):
            await exchange.delta(A if i % 2 else B, "yes", "0.0050", "1")
            await exchange.trade(A, i)
        await until(lambda: feed.stats.trades == 400 and books_match(feed, exchange, [A, B]))
        events = feed.drain()
        trades = [e for e in events if isinstance(e, TradeMessage)]
        assert len(trades) == 50 and feed.stats.trades_dropped == 350
        assert [t.trade_id for t in trades] == [f"t{i}" for i in range(350, 400)]  # newest kept
        assert sum(isinstance(e, BookUpdated) for e in events) == 2  # 400 deltas, 2 notifications


async def test_close_ends_iteration_cleanly(exchange: StubExchange) -> None:
    feed = KalshiFeed(exchange.url, exchange.creds, [A], reconnect_delay=0.05)
    seen: list[object] = []

    async def consume() -> None:
        async for ev in feed:
            seen.append(ev)

    feed.start()
    task = asyncio.create_task(consume())
    await until(lambda: books_match(feed, exchange, [A]))
    await feed.close()
    await asyncio.wait_for(task, 5)
    assert isinstance(seen[-1], FeedState) and seen[-1].state == "closed"
    assert feed.state == "closed" and task.done()
    await until(lambda: not exchange.conns)  # the socket really closed server-side


async def test_close_does_not_wait_for_a_peer_that_never_answers(exchange: StubExchange) -> None:
    # A frozen exchange never answers the close frame; websockets would wait out its close
    # timeout (2 s) on every stop and every stale reconnect.
    feed = KalshiFeed(exchange.url, exchange.creds, [A], reconnect_delay=0.05)
    feed.start()
    await until(lambda: books_match(feed, exchange, [A]))
    exchange.freeze()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await feed.close()
    assert loop.time() - started < 1.0
    assert feed.state == "closed"
    for c in exchange.conns:  # the exchange wakes up: it finds the connection gone
        c.ws.transport.resume_reading()
    await until(lambda: not exchange.conns)
