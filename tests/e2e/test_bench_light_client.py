"""The light sync client that bench/fanout.py loads the store with sees,
on the benchmark's own subscription (``marketData:getPrice``), what the official PyPI
``convex`` client sees: the same values in the same order (the official client may skip an
intermediate value, never invent one)."""

from __future__ import annotations

import pytest

from marketpulse.reactive.sync.client import LightSyncClient

from .test_marketdata_pypi_client import T0, Watched, apply, server  # noqa: F401

pytestmark = pytest.mark.e2e

PRICES = (0.41, 0.42, 0.43, 0.44)


async def test_light_client_sees_the_official_clients_getprice_values(server: str) -> None:  # noqa: F811
    from convex import ConvexClient

    await apply(server, prices=[{"ticker": "B1", "price": 0.40, "ts": T0}])
    official = Watched(ConvexClient(server), "getPrice", {"ticker": "B1"})
    light = await LightSyncClient(LightSyncClient.ws_url(server), keep_transitions=True).connect()
    try:
        query = await light.subscribe("marketData:getPrice", {"ticker": "B1"})
        light_seen = [await light.wait_for(query)]
        assert (await official.next()) == light_seen[0]
        for i, price in enumerate(PRICES, start=1):
            await apply(server, prices=[{"ticker": "B1", "price": price, "ts": T0 + i}])
            light_seen.append(
                await light.wait_for(query, lambda v, p=price: v is not None and v["price"] == p)
            )
        assert [v["price"] for v in light_seen] == [0.40, *PRICES]
        assert [v["updatedAt"] for v in light_seen] == [T0 + i for i in range(len(PRICES) + 1)]
        official_seen = [light_seen[0]]
        while official_seen[-1] != light_seen[-1]:
            official_seen.append(await official.next())
        assert all(v in light_seen for v in official_seen)
        assert [light_seen.index(v) for v in official_seen] == sorted(
            light_seen.index(v) for v in official_seen
        )
        # One Transition per change at the wire, each a single QueryUpdated for that query.
        changes = [t for t in light.transitions if t.modifications][-len(PRICES) :]
        assert all([m["type"] for m in t.modifications] == ["QueryUpdated"] for t in changes), (
            changes
        )
    finally:
        official.task.cancel()
        await light.close()
