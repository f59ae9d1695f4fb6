"""Every public query's real result validates against its JSON Schema (marketdata.schemas)."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from marketpulse.marketdata import functions as app
from marketpulse.marketdata.schemas import RESULT_SCHEMAS

from .conftest import Store

T0 = 1_700_000_000_000.0


def check(path: str, value: Any) -> None:
    jsonschema.Draft202012Validator(RESULT_SCHEMAS[path]).validate(value)


def test_every_public_query_has_a_schema() -> None:
    public = {
        f"{module.name}:{n}"
        for module in (app.marketData, app.watchlists, app.alerts, app.settings)
        for n, s in module.functions.items()
        if s.kind == "query" and s.visibility == "public"
    }
    assert public == set(RESULT_SCHEMAS)
    for schema in RESULT_SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(schema)


async def populate(store: Store) -> None:
    await store.mutate(
        "upsertMarkets",
        markets=[
            {
                "ticker": "FED-1",
                "eventTicker": "FED",
                "seriesTicker": "KXFED",
                "title": "Fed?",
                "subtitle": "Dec",
                "status": "active",
                "closeTime": T0 + 1e9,
                "previousPrice": 0.4,
                "lastPrice": 0.41,
                "yesBid": 0.4,
                "yesAsk": 0.42,
                "volume": 100,
                "openInterest": 50,
            },
            {"ticker": "EMPTY-1", "title": "Nothing yet", "status": "initialized"},
        ],
    )
    await store.apply(
        prices=[
            {
                "ticker": "FED-1",
                "price": 0.43,
                "yesBid": 0.42,
                "yesAsk": 0.44,
                "volume": 120,
                "openInterest": 55,
                "ts": T0,
            }
        ],
        books=[
            {
                "ticker": "FED-1",
                "bids": [[0.42, 10], [0.41, 4]],
                "asks": [[0.44, 7]],
                "ts": T0,
                "valid": True,
            },
            {"ticker": "FEED-ONLY", "bids": [], "asks": [[0.9, 1]], "ts": T0, "valid": True},
        ],
        trades=[
            {
                "id": f"t{i}",
                "ticker": "FED-1",
                "side": "buy" if i % 2 else "sell",
                "price": 0.4 + i / 100,
                "size": i + 1,
                "timestamp": T0 + i * 90_000,
            }
            for i in range(6)
        ],
    )
    await store.mutate(
        "reportStreamStatus",
        status={
            "streamId": "s1",
            "state": "connected",
            "markets": ["FED-1"],
            "messagesPerSecond": 3,
            "lastMessageAt": T0,
            "reconnects": 0,
            "gaps": 0,
            "lagMs": 1,
            "updatedAt": T0,
        },
    )


CALLS: list[tuple[str, dict[str, Any]]] = [
    *[("getPrice", {"ticker": t}) for t in ("FED-1", "EMPTY-1", "FEED-ONLY", "NOPE")],
    *[
        ("getOrderbook", {"ticker": t, "depth": 1})
        for t in ("FED-1", "FEED-ONLY", "EMPTY-1", "NOPE")
    ],
    *[("getRecentTrades", {"ticker": t}) for t in ("FED-1", "EMPTY-1", "NOPE")],
    ("listMarkets", {}),
    ("listMarkets", {"status": "active", "search": "fed"}),
    *[("getMarket", {"ticker": t}) for t in ("FED-1", "EMPTY-1", "FEED-ONLY", "NOPE")],
    *[("getCandles", {"ticker": "FED-1", "interval": i}) for i in ("1m", "5m", "1h")],
    ("getCandles", {"ticker": "NOPE", "interval": "1m"}),
    ("getStreamStatus", {}),
]


@pytest.mark.parametrize(
    ("name", "args"), CALLS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CALLS)]
)
async def test_result_matches_schema(store: Store, name: str, args: dict[str, Any]) -> None:
    await populate(store)
    check(f"marketData:{name}", store.query(name, **args))


async def test_schemas_reject_wrong_shapes(store: Store) -> None:
    await populate(store)
    price = store.query("getPrice", ticker="FED-1")
    with pytest.raises(jsonschema.ValidationError):
        check("marketData:getPrice", {**price, "changePercent24h": None})
    trades = store.query("getRecentTrades", ticker="FED-1")
    with pytest.raises(jsonschema.ValidationError):
        check("marketData:getRecentTrades", [{**trades[0], "side": "yes"}])
    book = store.query("getOrderbook", ticker="FED-1")
    with pytest.raises(jsonschema.ValidationError):
        check("marketData:getOrderbook", {**book, "bids": [{"price": 0.4, "size": 1}]})
