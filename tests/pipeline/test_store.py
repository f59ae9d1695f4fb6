"""The worker's store client against a real ``marketpulse serve``: both transports, and failures."""

from __future__ import annotations

import asyncio

import pytest

from marketpulse.pipeline._store import StoreClient, StoreError
from marketpulse.testing import LocalSystem

pytestmark = pytest.mark.timeout(120)

STATUS = {
    "streamId": "store-client-test",
    "state": "connected",
    "markets": ["KXTEST-1"],
    "gaps": 0,
    "updatedAt": 1_000.0,
}


@pytest.mark.parametrize("transport", ["websocket", "http"])
async def test_mutations_commit_and_errors_are_not_transient(
    store: LocalSystem, transport: str
) -> None:
    client = StoreClient(store.store_url, store.admin_key, transport=transport)  # type: ignore[arg-type]
    try:
        await client.mutation("marketData:reportStreamStatus", {"status": STATUS})
        status = store.query("marketData:getStreamStatus", {})
        assert [s["streamId"] for s in status] == ["store-client-test"]
        with pytest.raises(StoreError) as bad_args:
            await client.mutation("marketData:reportStreamStatus", {"status": 42})
        assert not bad_args.value.transient
        with pytest.raises(StoreError) as unknown:
            await client.mutation("marketData:noSuchFunction", {})
        assert not unknown.value.transient
        # The socket (or pool) is still good after refused calls.
        await client.mutation(
            "marketData:reportStreamStatus", {"status": {**STATUS, "gaps": 3, "updatedAt": 2_000.0}}
        )
        assert store.query("marketData:getStreamStatus", {})[0]["gaps"] == 3
    finally:
        await client.aclose()


async def test_a_wrong_admin_key_is_refused_clearly_and_never_echoed(store: LocalSystem) -> None:
    wrong = "not-the-key-" + "x" * 40
    client = StoreClient(store.store_url, wrong)
    try:
        with pytest.raises(StoreError) as refused:
            await client.mutation("marketData:reportStreamStatus", {"status": STATUS})
        assert not refused.value.transient
        assert "admin key" in str(refused.value) and wrong not in str(refused.value)
    finally:
        await client.aclose()
    assert store.query("marketData:getStreamStatus", {}) == []


async def test_store_restart_is_a_transient_error_then_the_next_call_reconnects(
    store: LocalSystem,
) -> None:
    client = StoreClient(store.store_url, store.admin_key, timeout=5.0)
    try:
        await client.mutation("marketData:reportStreamStatus", {"status": STATUS})
        store.procs["store"].stop(10)
        with pytest.raises(StoreError) as down:
            await client.mutation("marketData:reportStreamStatus", {"status": STATUS})
        assert down.value.transient
        store.procs["store"].start()  # the same port, file and key
        await client.mutation(
            "marketData:reportStreamStatus", {"status": {**STATUS, "gaps": 7, "updatedAt": 3_000.0}}
        )
        assert store.query("marketData:getStreamStatus", {})[0]["gaps"] == 7
    finally:
        await client.aclose()


async def test_a_mutation_cancelled_as_its_response_arrives_ends_cancelled(
    store: LocalSystem,
) -> None:
    # Python 3.11's wait_for returned the result here and swallowed the cancellation, so the
    # stream's batch writer never stopped and a workflow stop hung (CI, session 4).
    client = StoreClient(store.store_url, store.admin_key)
    try:
        await client.mutation("marketData:reportStreamStatus", {"status": STATUS})
        sync = client._sync
        assert sync is not None
        call = asyncio.create_task(
            client.mutation("marketData:reportStreamStatus", {"status": STATUS})
        )
        while not sync._pending:
            await asyncio.sleep(0)
        accepted: list[bool] = []
        (response,) = sync._pending.values()
        # Cancel in the very turn the response arrives.
        response.add_done_callback(lambda _: accepted.append(call.cancel()))
        try:
            await call
            ended_cancelled = False
        except asyncio.CancelledError:
            ended_cancelled = True
        # A cancel that came too late is refused; one that was accepted must be honoured.
        assert accepted == [ended_cancelled]
    finally:
        await client.aclose()


async def test_mutations_sent_ahead_share_a_socket_and_a_pinned_one_never_opens_another(
    store: LocalSystem,
) -> None:
    client = StoreClient(store.store_url, store.admin_key, timeout=5.0)
    try:
        first = await client.send_mutation(
            "marketData:reportStreamStatus", {"status": {**STATUS, "gaps": 1}}
        )
        second = await client.send_mutation(
            "marketData:reportStreamStatus",
            {"status": {**STATUS, "gaps": 2, "updatedAt": 2_000.0}},
            connection=first.connection,
        )
        assert first.connection == second.connection == 1
        await first.result()
        await second.result()
        assert store.query("marketData:getStreamStatus", {})[0]["gaps"] == 2

        store.procs["store"].stop(10)
        store.procs["store"].start()
        sync = client._sync
        assert sync is not None
        async with asyncio.timeout(20):
            while sync.failure is None:
                await asyncio.sleep(0.02)
        with pytest.raises(StoreError) as pinned:
            await client.send_mutation(
                "marketData:reportStreamStatus", {"status": STATUS}, connection=1
            )
        assert pinned.value.transient
        assert client.connections == 1, "a pinned send opened no socket"
        third = await client.send_mutation(
            "marketData:reportStreamStatus", {"status": {**STATUS, "gaps": 3, "updatedAt": 3_000.0}}
        )
        assert third.connection == 2
        await third.result()
        assert store.query("marketData:getStreamStatus", {})[0]["gaps"] == 3
    finally:
        await client.aclose()
