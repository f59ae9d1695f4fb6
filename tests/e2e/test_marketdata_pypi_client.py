"""The official PyPI ``convex`` client (0.8.1) subscribed to every marketData query through a
real ``python -m marketpulse serve``, fed by applyUpdates batches sent with the admin key the
way the worker sends them (HTTP ``/api/mutation``, ``Authorization: Convex <key>``).

Each change must arrive exactly once, on exactly the subscriptions whose results it changes;
the last test checks the same at the wire (Transition modifications) with the light sync
client, since the official client re-yields unchanged values (see ``Watched``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from convex import ConvexClient, ConvexError

from marketpulse.testing import AsyncAdminClient, StoreProcess

pytestmark = pytest.mark.e2e

# `marketpulse serve` (the store's HTTP/WebSocket front doors) lands separately from the engine.
pytest.importorskip(
    "marketpulse.reactive.server", reason="marketpulse serve is not on this branch yet"
)

ADMIN_KEY = "e2e-marketdata-admin-key-0123456789"
T0 = 1_700_000_000_000.0
QUIET_S = 0.6  # how long "nothing else arrives" is watched for after each change
ARRIVE_S = 10.0
_NOTHING = object()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    log = tmp_path / "serve.log"
    with StoreProcess(tmp_path / "store.db", admin_key=ADMIN_KEY, log_path=log) as store:
        yield store.url
    assert ADMIN_KEY not in log.read_text(), "the admin key leaked into the log"


async def mutate(
    url: str, path: str, args: dict[str, Any], key: str | None = ADMIN_KEY
) -> dict[str, Any]:
    """An HTTP mutation as the worker sends it (docs/interfaces.md §4)."""
    async with AsyncAdminClient(url, key, timeout=10) as client:
        try:
            return await client.call("mutation", path, args)
        except httpx.HTTPStatusError as exc:
            return {"status": "error", "httpStatus": exc.response.status_code}


async def apply(url: str, **batch: Any) -> Any:
    body = await mutate(url, "marketData:applyUpdates", {"batch": batch})
    assert body["status"] == "success", body
    return body["value"]


class Watched:
    """One subscription of the official client, read by a task into a queue of new values.

    The client's blocking iterator holds the GIL while it waits, so it is read through its
    async iterator instead. convex 0.8.1 yields every subscription's current value again on
    each Transition the client receives, changed or not (the server sends only the changed
    query: see test_marketdata_transitions.py); such a repeat is counted in ``repeats`` and is
    not a new value.
    """

    def __init__(self, client: ConvexClient, name: str, args: dict[str, Any]) -> None:
        self.name = name
        self.values: asyncio.Queue[Any] = asyncio.Queue()
        self.repeats = 0
        self.sub = client.subscribe(f"marketData:{name}", args)
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        last: Any = _NOTHING
        while True:
            try:
                value = await self.sub.__anext__()
            except Exception as exc:  # surfaced by next() below
                self.values.put_nowait(exc)
                return
            if value == last:
                self.repeats += 1
                continue
            last = value
            self.values.put_nowait(value)

    async def next(self, timeout: float = ARRIVE_S) -> Any:
        value = await asyncio.wait_for(self.values.get(), timeout)
        if isinstance(value, Exception):
            raise value
        return value

    def pending(self) -> list[Any]:
        out = []
        while not self.values.empty():
            out.append(self.values.get_nowait())
        return out


def trade(i: int, ticker: str, price: float, ts: float) -> dict[str, Any]:
    return {
        "id": f"{ticker}-{i}",
        "ticker": ticker,
        "side": "buy" if i % 2 else "sell",
        "price": price,
        "size": 2.0,
        "timestamp": ts,
    }


async def test_each_change_arrives_exactly_once(server: str) -> None:
    url = server
    markets = [
        {
            "ticker": t,
            "eventTicker": "E",
            "title": f"Market {t}",
            "status": "active",
            "previousPrice": 0.5,
        }
        for t in ("A", "B")
    ]
    assert (await mutate(url, "marketData:upsertMarkets", {"markets": markets}))[
        "status"
    ] == "success"
    await apply(
        url,
        books=[
            {"ticker": t, "bids": [[0.4, 1.0]], "asks": [[0.6, 1.0]], "ts": T0, "valid": True}
            for t in ("A", "B")
        ],
        trades=[trade(0, t, 0.5, T0) for t in ("A", "B")],
    )

    client = ConvexClient(url)
    watched = {
        "price": Watched(client, "getPrice", {"ticker": "A"}),
        "book": Watched(client, "getOrderbook", {"ticker": "A", "depth": 5}),
        "trades": Watched(client, "getRecentTrades", {"ticker": "A", "limit": 10}),
        "candles": Watched(client, "getCandles", {"ticker": "A", "interval": "1m"}),
        "market": Watched(client, "getMarket", {"ticker": "A"}),
        "list": Watched(client, "listMarkets", {"status": "active"}),
        "streams": Watched(client, "getStreamStatus", {}),
        "unknown": Watched(client, "getPrice", {"ticker": "NOPE"}),
    }
    first = {k: await w.next() for k, w in watched.items()}
    assert first["price"]["price"] == 0.5 and first["book"]["bids"] == [[0.4, 1.0]]
    assert [t["id"] for t in first["trades"]] == ["A-0"]
    assert [m["ticker"] for m in first["list"]] == ["A", "B"]
    assert first["streams"] == [] and first["unknown"] is None

    async def expect(changed: dict[str, Any]) -> dict[str, Any]:
        """Exactly one new value on each subscription in ``changed`` (checked), none elsewhere."""
        got = {k: await watched[k].next() for k in changed}
        await asyncio.sleep(QUIET_S)
        extra = {k: w.pending() for k, w in watched.items()}
        assert {k: v for k, v in extra.items() if v} == {}, (
            "a change arrived twice or on the wrong subscription"
        )
        for k, check in changed.items():
            assert check(got[k]), (k, got[k])
        return got

    # A book change on A: only getOrderbook(A).
    await apply(
        url,
        books=[
            {
                "ticker": "A",
                "bids": [[0.45, 3.0], [0.44, 1.0]],
                "asks": [[0.55, 2.0]],
                "ts": T0 + 1,
                "valid": True,
            }
        ],
    )
    await expect({"book": lambda v: v["bids"] == [[0.45, 3.0], [0.44, 1.0]] and v["spread"] == 0.1})

    # A trade on A: trades, candles, price and the market views; not the book.
    await apply(url, trades=[trade(1, "A", 0.55, T0 + 2)])
    got = await expect(
        {
            "trades": lambda v: [t["id"] for t in v] == ["A-1", "A-0"] and v[0]["side"] == "buy",
            "candles": lambda v: v[-1]["close"] == 0.55,
            "price": lambda v: v["price"] == 0.55 and v["changePercent24h"] == 10.0,
            "market": lambda v: v["price"] == 0.55,
            "list": lambda v: v[0]["price"] == 0.55,
        }
    )
    assert isinstance(got["trades"][0]["timestamp"], float)

    # Everything on B: only the market list (it shows B's price).
    await apply(
        url,
        prices=[{"ticker": "B", "yesBid": 0.3, "ts": T0 + 3}],
        books=[{"ticker": "B", "bids": [[0.3, 9.0]], "asks": [], "ts": T0 + 3, "valid": True}],
        trades=[trade(2, "B", 0.35, T0 + 3)],
    )
    await expect({"list": lambda v: v[1]["price"] == 0.35})

    # An invalid book for A: getOrderbook(A) becomes null.
    await apply(url, books=[{"ticker": "A", "ts": T0 + 4, "valid": False}])
    await expect({"book": lambda v: v is None})

    # Stream status.
    status = {
        "streamId": "s1",
        "state": "connected",
        "markets": ["A", "B"],
        "messagesPerSecond": 5.0,
        "lastMessageAt": T0,
        "reconnects": 0,
        "gaps": 0,
        "lagMs": 2.0,
        "updatedAt": T0,
    }
    assert (await mutate(url, "marketData:reportStreamStatus", {"status": status}))[
        "status"
    ] == "success"
    await expect({"streams": lambda v: v[0]["state"] == "connected"})

    # A replayed batch changes nothing and pushes nothing.
    assert (await apply(url, trades=[trade(1, "A", 0.55, T0 + 2)]))["skipped"] == 1
    await expect({})
    for w in watched.values():
        w.task.cancel()


async def test_internal_mutation_needs_the_admin_key(server: str) -> None:
    url = server
    batch = {"trades": [trade(1, "A", 0.5, T0)]}
    body = await mutate(url, "marketData:applyUpdates", {"batch": batch}, key=None)
    assert body["status"] == "error"
    body = await mutate(url, "marketData:applyUpdates", {"batch": batch}, key="wrong-key")
    assert body.get("status") != "success"
    client = ConvexClient(url)
    assert client.query("marketData:getRecentTrades", {"ticker": "A"}) is None
    # The official client with set_admin_auth reaches it.
    client.set_admin_auth(ADMIN_KEY)
    result = client.mutation("marketData:applyUpdates", {"batch": batch})
    assert result["trades"] == 1.0
    assert ConvexClient(url).query("marketData:getRecentTrades", {"ticker": "A"})[0]["id"] == "A-1"


def test_argument_errors_reach_the_client(server: str) -> None:
    client = ConvexClient(server)
    with pytest.raises(Exception, match="ArgumentValidationError") as info:
        client.query("marketData:getOrderbook", {"ticker": "A", "depth": 500})
    assert not isinstance(info.value, ConvexError)
    assert client.query("marketData:getOrderbook", {"ticker": "A"}) is None


async def test_transitions_carry_only_the_changed_queries(server: str) -> None:
    """At the wire: 50 markets, 150 subscriptions; each batch's Transitions carry exactly one
    QueryUpdated for each query whose result it changed, and none for any other."""
    sync_client = pytest.importorskip("marketpulse.reactive.sync.client")
    url = server
    tickers = [f"M{i:02d}" for i in range(50)]

    def book(t: str, ts: float, size: float) -> dict[str, Any]:
        return {"ticker": t, "bids": [[0.4, size]], "asks": [[0.6, 1.0]], "ts": ts, "valid": True}

    await apply(
        url,
        books=[book(t, T0, 1.0) for t in tickers],
        prices=[{"ticker": t, "yesBid": 0.4, "yesAsk": 0.6, "ts": T0} for t in tickers],
        trades=[trade(0, t, 0.5, T0) for t in tickers],
    )
    client = await sync_client.LightSyncClient(sync_client.LightSyncClient.ws_url(url)).connect()
    try:
        ids: dict[str, dict[str, int]] = {"getOrderbook": {}, "getRecentTrades": {}, "getPrice": {}}
        for name, by_ticker in ids.items():
            for t in tickers:
                by_ticker[t] = await client.subscribe(f"marketData:{name}", {"ticker": t})
        everything = [q for by_ticker in ids.values() for q in by_ticker.values()]
        for q in everything:
            await client.wait_for(q)

        async def updates_after(batch: dict[str, Any], expected: int) -> Counter[int]:
            mark = len(client.transitions)
            await apply(url, **batch)
            deadline = time.monotonic() + ARRIVE_S
            while sum(len(t.modifications) for t in client.transitions[mark:]) < expected:
                assert time.monotonic() < deadline, "the expected updates did not arrive"
                await asyncio.sleep(0.02)
            await asyncio.sleep(QUIET_S)
            mods = [m for t in client.transitions[mark:] for m in t.modifications]
            assert {m["type"] for m in mods} <= {"QueryUpdated"}, mods
            return Counter(m["queryId"] for m in mods)

        # Every market's book changes: its getOrderbook only, once each.
        got = await updates_after({"books": [book(t, T0 + 1, 2.0) for t in tickers]}, 50)
        assert got == Counter(ids["getOrderbook"].values())
        # Trades on ten markets: their trades and price queries, once each.
        ten = tickers[:10]
        got = await updates_after({"trades": [trade(1, t, 0.55, T0 + 2) for t in ten]}, 20)
        assert got == Counter(
            [ids["getRecentTrades"][t] for t in ten] + [ids["getPrice"][t] for t in ten]
        )
        # The same batch again: nothing changes, nothing is sent.
        assert (
            await updates_after({"trades": [trade(1, t, 0.55, T0 + 2) for t in ten]}, 0)
            == Counter()
        )
        assert client.values[ids["getOrderbook"]["M07"]]["bids"] == [[0.4, 2.0]]
    finally:
        await client.close()
