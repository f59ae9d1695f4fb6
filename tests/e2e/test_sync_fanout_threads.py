"""A real ``marketpulse serve`` with the threaded fan-out on: 1,000 light subscribers of one
query each receive every Transition, whole and in order (their version chain unbroken), and
the store says its fan-outs were written on threads."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from marketpulse.reactive.sync.client import LightSyncClient, RawSubscriber
from marketpulse.testing import StoreProcess
from scrape import metric

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench"
SUBSCRIBERS = 1000
ROUNDS = 8


async def test_a_thousand_subscribers_get_every_transition_in_order(tmp_path: Path) -> None:
    with StoreProcess(
        tmp_path / "store.sqlite",
        functions="sync_latency_app",
        pythonpath=[BENCH],
        extra=["--max-connections-per-client", "0"],
        env={"MARKETPULSE_FANOUT_THREADS": "1", "MARKETPULSE_FANOUT_MIN_SOCKETS": "64"},
    ) as store:
        ws_url = LightSyncClient.ws_url(store.url)
        writer = await LightSyncClient(ws_url, keep_transitions=False).connect()
        await writer.request("Mutation", "bench:stamp", {"seq": 0})
        seen: list[list[int]] = [[] for _ in range(SUBSCRIBERS)]
        done = asyncio.Event()
        finished = 0

        def recorder(index: int) -> Any:
            def on_transition(message: dict[str, Any], received_ns: int) -> None:
                nonlocal finished
                for mod in message["modifications"]:
                    value = mod.get("value")
                    if isinstance(value, dict) and "seq" in value:
                        seen[index].append(int(value["seq"]))
                        if value["seq"] == ROUNDS:
                            finished += 1
                            if finished == SUBSCRIBERS:
                                done.set()

            return on_transition

        loop = asyncio.get_running_loop()
        host, port = store.url.split("//", 1)[1].rsplit(":", 1)
        subscribers: list[RawSubscriber] = []
        try:
            for i in range(SUBSCRIBERS):
                _, sub = await loop.create_connection(
                    lambda i=i: RawSubscriber(ws_url, "bench:latest", {}, recorder(i)),
                    host,
                    int(port),
                )
                subscribers.append(sub)
            async with asyncio.timeout(120):
                await asyncio.gather(*(s.subscribed for s in subscribers))
            threaded_before = metric(store.url, "marketpulse_sync_fanout_threaded_total")
            for seq in range(1, ROUNDS + 1):
                response = await writer.request("Mutation", "bench:stamp", {"seq": seq})
                assert response["success"], response
                await asyncio.sleep(0.2)  # time to read 1,000 sockets: no round is skipped
            async with asyncio.timeout(60):
                await done.wait()
            # Every subscriber: the seed, then each round once, in commit order; a broken
            # version chain would have set a failure (RawSubscriber checks startVersion).
            assert [s.failure for s in subscribers] == [None] * SUBSCRIBERS
            expected = [0, *range(1, ROUNDS + 1)]
            wrong = [i for i, got in enumerate(seen) if got != expected]
            assert not wrong, (len(wrong), seen[wrong[0]])
            threaded = metric(store.url, "marketpulse_sync_fanout_threaded_total")
            assert threaded - threaded_before >= ROUNDS
        finally:
            for sub in subscribers:
                sub.close()
            await writer.close()
