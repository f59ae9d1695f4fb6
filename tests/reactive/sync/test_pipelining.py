"""One socket's mutations pipelined over a real server: the next runs while the previous one's
durable write is in flight, yet they run in the order sent, each sees the previous one's writes,
responses come in order, and no Transition shows a write before its response."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from marketpulse.reactive.limits import ConnectionLimits
from marketpulse.reactive.persistence._slow_disk import inject_slow_disk
from marketpulse.reactive.sync.client import LightSyncClient, ServerError
from marketpulse.reactive.values import decode_ts
from scrape import sample

from .serving import Served, serve_store

WRITE_S = 0.04  # every durable write of the slowed disk takes at least this long


def slow(store: Served) -> None:
    # Every flush stalls (the next one is always more than every_s later), so a connection
    # that waited for each durable write would pay WRITE_S per mutation.
    inject_slow_disk(store.engine.persistence, WRITE_S, 1e-6)


def check_order(messages: list[dict[str, Any]], count: int) -> None:
    """The rules the official clients need (sync/connection.py, the mutations section)."""
    responses = [(i, m) for i, m in enumerate(messages) if m["type"] == "MutationResponse"]
    assert [m["requestId"] for _, m in responses] == list(range(count)), "responses in order"
    for at, response in responses:
        ts = decode_ts(response["ts"])
        before = [m for m in messages[:at] if m["type"] == "Transition"]
        assert all(decode_ts(t["endVersion"]["ts"]) < ts for t in before), (
            f"a Transition reached ts {ts} before the response to {response['requestId']}"
        )
        after = [m for m in messages[at + 1 :] if m["type"] == "Transition"]
        assert after and decode_ts(after[0]["endVersion"]["ts"]) >= ts, (
            f"no Transition resolves mutation {response['requestId']}"
        )


async def send_many(client: LightSyncClient, name: str, count: int) -> list[dict[str, Any]]:
    # One task per request, created in order: each sends before the next, none awaits a reply.
    return list(
        await asyncio.gather(
            *(client.request("Mutation", "counter:inc", {"name": name}) for _ in range(count))
        )
    )


async def test_mutations_run_ahead_of_their_durable_writes_in_order(tmp_path: Path) -> None:
    count = 40
    async with serve_store(tmp_path / "s.sqlite") as store:
        slow(store)
        c = await store.client()
        q = await c.subscribe("counter:get", {"name": "p"})
        await c.wait_for(q)
        groups = store.engine.timings.groups
        started = asyncio.get_running_loop().time()
        results = await send_many(c, "p", count)
        elapsed = asyncio.get_running_loop().time() - started
        writes = store.engine.timings.groups - groups
        # Each ran after the one before and saw its write.
        assert [r["result"] for r in results] == [float(i) for i in range(1, count + 1)]
        # Several shared one durable write: they ran while an earlier write was in flight.
        assert writes <= count // 3, f"{writes} durable writes for {count} mutations"
        assert elapsed < count * WRITE_S, f"{elapsed:.2f} s: as slow as one at a time"
        await c.wait_for(q, lambda v: v == float(count))
        check_order(c.messages, count)
        # No Transition showed a write its response had not announced yet.
        answered = 0.0
        for m in c.messages:
            if m["type"] == "MutationResponse":
                answered = max(answered, m["result"])
            elif m["type"] == "Transition":
                for mod in m["modifications"]:
                    if mod.get("queryId") == q and mod.get("value") is not None:
                        assert mod["value"] <= answered, (mod["value"], answered)
        await c.close()


async def test_a_pipeline_depth_of_one_runs_them_one_at_a_time(tmp_path: Path) -> None:
    count = 12
    limits = ConnectionLimits(max_mutations_in_flight=1)
    async with serve_store(tmp_path / "s.sqlite", limits) as store:
        slow(store)
        c = await store.client()
        groups = store.engine.timings.groups
        results = await send_many(c, "d", count)
        assert [r["result"] for r in results] == [float(i) for i in range(1, count + 1)]
        assert store.engine.timings.groups - groups == count, "one durable write each"
        check_order(c.messages, count)
        await c.close()


async def test_each_mutation_s_wait_behind_the_socket_s_earlier_ones_is_measured(
    tmp_path: Path,
) -> None:
    count = 6
    limits = ConnectionLimits(max_mutations_in_flight=1)
    async with serve_store(tmp_path / "s.sqlite", limits) as store:
        slow(store)
        c = await store.client()
        await send_many(c, "w", count)
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"{store.url}/metrics")).text
        await c.close()
    name = "marketpulse_sync_mutation_wait_seconds"
    assert sample(text, f"{name}_count") == count
    # Sent at once and run one at a time, each behind the durable writes of those before it:
    # the last one alone waited for count - 1 of them.
    assert sample(text, f"{name}_sum") >= (count - 1) * WRITE_S * 0.9
    # Every one but the first waited at least one write (WRITE_S, over the 0.02 s bucket).
    assert sample(text, f"{name}_bucket", le="0.02") <= 1


async def test_failures_keep_their_place_and_later_mutations_see_earlier_writes(
    tmp_path: Path,
) -> None:
    async with serve_store(tmp_path / "s.sqlite") as store:
        slow(store)
        c = await store.client()
        calls = [
            ("counter:inc", {"name": "f"}),
            ("counter:incThenFail", {"name": "f"}),  # raises: writes nothing
            ("counter:inc", {"name": "f", "by": 2}),
            ("counter:nope", {}),  # no such function
            ("counter:inc", {"name": "f"}),
        ]
        results = await asyncio.gather(*(c.request("Mutation", p, a) for p, a in calls))
        assert [r["requestId"] for r in results] == list(range(len(calls)))
        assert [r["success"] for r in results] == [True, False, True, False, True]
        assert [results[i]["result"] for i in (0, 2, 4)] == [1.0, 3.0, 4.0]
        responses = [m for m in c.messages if m["type"] == "MutationResponse"]
        assert [m["requestId"] for m in responses] == list(range(len(calls))), "in order"
        # Clients settle a failure on its response and a success on the next Transition: a
        # Transition separates every success from a failure answered after it, so the
        # client's promises settle in the order sent.
        unsettled = False
        for m in c.messages:
            if m["type"] == "Transition":
                unsettled = False
            elif m["type"] == "MutationResponse":
                assert m["success"] or not unsettled, f"failure {m['requestId']} overtakes"
                unsettled = unsettled or m["success"]
        await c.close()


async def test_a_pipeline_cut_off_by_a_disconnect_runs_once_across_the_reconnect(
    tmp_path: Path,
) -> None:
    count = 30
    async with serve_store(tmp_path / "s.sqlite") as store:
        slow(store)
        first = await store.client()
        for rid in range(count):
            await first.send_raw(
                f'{{"type":"Mutation","requestId":{rid},"udfPath":"counter:inc",'
                f'"args":[{{"name":"cut"}}]}}'
            )
        await asyncio.sleep(WRITE_S / 2)  # some run, their writes in flight
        await first.close()
        # The client reconnects with its session and re-sends every unanswered mutation.
        again = await LightSyncClient(store.ws_url, session_id=first.session_id).connect()
        results = await asyncio.gather(
            *(
                again.request("Mutation", "counter:inc", {"name": "cut"}, request_id=rid)
                for rid in range(count)
            )
        )
        assert [r["result"] for r in results] == [float(i) for i in range(1, count + 1)]
        q = await again.subscribe("counter:get", {"name": "cut"})
        assert await again.wait_for(q) == float(count), "each ran exactly once"
        await again.close()


@pytest.mark.parametrize("depth", [2, 256])
async def test_a_full_queue_of_mutations_holds_the_socket_back_and_runs_them_all(
    tmp_path: Path, depth: int
) -> None:
    """The official clients put no bound on the mutations they send: past the queue's bound
    the server stops reading the socket until half is answered, and every mutation runs once,
    in order, with no error (a FatalError would stop the client for good)."""
    limits = ConnectionLimits(max_pending_mutations=8, max_mutations_in_flight=depth)
    async with serve_store(tmp_path / "s.sqlite", limits) as store:
        slow(store)
        c = await store.client()
        count = 40
        results = await asyncio.gather(
            *(
                c.request("Mutation", "counter:inc", {"name": "flood"}, request_id=rid)
                for rid in range(count)
            )
        )
        assert [r["result"] for r in results] == [float(i) for i in range(1, count + 1)]
        assert c.failure is None
        q = await c.subscribe("counter:get", {"name": "flood"})
        assert await c.wait_for(q) == float(count)
        await c.close()


async def test_closing_the_client_fails_every_request_still_in_flight(tmp_path: Path) -> None:
    """Several requests wait on one socket (the pipeline's writer keeps some in flight): when
    the client closes it, none of them may wait for an answer that can no longer come."""
    async with serve_store(tmp_path / "s.sqlite") as store:
        slow(store)
        c = await store.client()
        futures = [await c.send_request("Mutation", "counter:inc", {"name": "x"}) for _ in range(3)]
        await c.close()
        assert all(f.done() for f in futures)
        assert any(f.exception() is not None for f in futures)
        with pytest.raises(ServerError):
            await c.send_request("Mutation", "counter:inc", {"name": "x"})
