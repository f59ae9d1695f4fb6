"""The sync WebSocket over a real server: protocol behaviour, bad input and slow clients."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from marketpulse.reactive.limits import ConnectionLimits
from marketpulse.reactive.sync.client import LightSyncClient, ServerError
from marketpulse.reactive.values import decode_ts

from .serving import ADMIN_KEY, Served, serve_store

LIMITS = ConnectionLimits(
    max_message_bytes=64 * 1024,
    client_send_timeout_s=1.0,
    ping_interval_s=0.3,
)


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    async with serve_store(tmp_path / "s.sqlite", LIMITS) as served:
        yield served


async def inc(store: Served, name: str, by: float = 1.0) -> float:
    async with httpx.AsyncClient() as http:
        r = await http.post(
            store.url + "/api/mutation",
            json={"path": "counter:inc", "args": {"name": name, "by": by}},
        )
    body = r.json()
    assert body["status"] == "success", body
    return float(body["value"])


async def test_subscriber_gets_writes_from_other_sockets_and_http(store: Served) -> None:
    a, b = await store.client(), await store.client()
    qa = await a.subscribe("counter:get", {"name": "x"})
    assert await a.wait_for(qa) == 0.0
    resp = await b.request("Mutation", "counter:inc", {"name": "x", "by": 2})
    assert resp["success"] and resp["result"] == 2.0
    assert await a.wait_for(qa, lambda v: v == 2.0) == 2.0
    await inc(store, "x", 3)
    assert await a.wait_for(qa, lambda v: v == 5.0) == 5.0
    # Paths as clients send them: with .js, and the Python client's canonical form.
    qb = await b.subscribe("counter.js:get", {"name": "x"})
    assert await b.wait_for(qb) == 5.0
    await a.close()
    await b.close()


async def test_mutation_response_precedes_the_transition_that_reflects_it(store: Served) -> None:
    c = await store.client()
    q = await c.subscribe("counter:get", {"name": "m"})
    await c.wait_for(q)
    for i in range(5):
        resp = await c.request("Mutation", "counter:inc", {"name": "m"})
        commit_ts = decode_ts(resp["ts"])
        await c.wait_for(q, lambda v, i=i: v == i + 1.0)
        kinds = [m["type"] for m in c.messages]
        at = max(j for j, m in enumerate(c.messages) if m.get("requestId") == resp["requestId"])
        after = [m for m in c.messages[at + 1 :] if m["type"] == "Transition"]
        assert after, f"no Transition after the MutationResponse: {kinds}"
        assert decode_ts(after[0]["endVersion"]["ts"]) >= commit_ts
        before = [m for m in c.messages[:at] if m["type"] == "Transition"]
        assert all(mod.get("value") != i + 1.0 for t in before for mod in t["modifications"]), (
            "the write was visible before its MutationResponse"
        )
    # A failed mutation is also followed by a Transition (Rust clients wait for it).
    n = len(c.transitions)
    resp = await c.request("Mutation", "counter:incThenFail", {"name": "m"})
    assert resp["success"] is False and resp["errorData"] == {"code": "nope", "name": "m"}
    for _ in range(100):
        if len(c.transitions) > n:
            break
        await asyncio.sleep(0.02)
    assert len(c.transitions) > n
    assert c.values[q] == 5.0, "the failed mutation wrote nothing"
    await c.close()


async def test_failing_and_runaway_queries_fail_alone(store: Served) -> None:
    c, other = await store.client(), await store.client()
    good = await other.subscribe("counter:get", {"name": "g"})
    await other.wait_for(good)
    boom = await c.subscribe("counter:boom")
    with pytest.raises(ServerError, match="boom on purpose"):
        await c.wait_for(boom)
    spin = await c.subscribe("counter:spin")
    with pytest.raises(ServerError, match="timed out"):
        await c.wait_for(spin)
    missing = await c.subscribe("nope:nothing")
    with pytest.raises(ServerError, match="Could not find public function"):
        await c.wait_for(missing)
    bad_args = await c.subscribe("counter:get", {"name": 5})
    with pytest.raises(ServerError, match="ArgumentValidationError"):
        await c.wait_for(bad_args)
    await inc(store, "g")
    assert await other.wait_for(good, lambda v: v == 1.0) == 1.0
    assert c.failure is None, "query errors are QueryFailed, not fatal"
    fails = [m for t in c.transitions for m in t.modifications if m["type"] == "QueryFailed"]
    assert fails and all("errorData" not in m for m in fails)
    await c.close()
    await other.close()


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ("{not json", "WSMessageInvalidJson"),
        (  # a lone surrogate, which no store can hold
            '{"type":"Mutation","requestId":0,"udfPath":"counter:inc","args":[{"name":"\\udc00"}]}',
            "WSMessageInvalidJson",
        ),
        (
            '{"type":"ModifyQuerySet","baseVersion":7,"newVersion":8,"modifications":[]}',
            "BaseVersionMismatch",
        ),
        ('{"type":"Mutation","requestId":"x"}', "requestId"),
        ("x" * 70_000, "MessageTooLarge"),
    ],
)
async def test_bad_frames_get_fatal_error_and_others_keep_being_served(
    store: Served, payload: str, error: str
) -> None:
    other = await store.client()
    q = await other.subscribe("counter:get", {"name": "bad"})
    await other.wait_for(q)
    bad = await store.client()
    await bad.send_raw(payload)
    for _ in range(200):
        if bad.failure is not None:
            break
        await asyncio.sleep(0.01)
    assert isinstance(bad.failure, ServerError) and error in str(bad.failure)
    await inc(store, "bad")
    assert await other.wait_for(q, lambda v: v == 1.0) == 1.0
    await other.close()
    await bad.close()


async def test_frame_beyond_the_transport_limit_is_closed(store: Served) -> None:
    other = await store.client()
    q = await other.subscribe("counter:get", {"name": "huge"})
    await other.wait_for(q)
    async with connect(store.ws_url, max_size=None) as ws:
        await ws.send("y" * (3 * LIMITS.max_message_bytes))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await inc(store, "huge")
    assert await other.wait_for(q, lambda v: v == 1.0) == 1.0
    await other.close()


async def test_unknown_messages_are_ignored_and_pings_flow(store: Served) -> None:
    c = await store.client()
    await c.send_raw('{"type":"Event","eventType":"ClientConnect","event":{}}')
    await c.send_raw('{"type":"RetryDegradableQueries","epoch":1}')
    await c.send_raw('{"type":"FromTheFuture"}')
    q = await c.subscribe("counter:get", {"name": "u"})
    assert await c.wait_for(q) == 0.0
    await asyncio.sleep(1.0)
    assert any(m["type"] == "Ping" for m in c.messages), "keepalive Ping while idle"
    assert c.failure is None
    await c.close()


async def test_routes_and_duplicate_slashes(store: Served) -> None:
    base = store.url.replace("http://", "ws://")
    for path in ("/api/sync", "/api/1.99.0-alpha.3/sync", "//api/1.48.0/sync", "/api//sync"):
        c = await LightSyncClient(base + path).connect()
        q = await c.subscribe("counter:get", {"name": "r"})
        assert await c.wait_for(q) == 0.0, path
        await c.close()


async def test_admin_auth_bumps_identity_and_unlocks_internal_functions(store: Served) -> None:
    c = await store.client()
    q = await c.subscribe("counter:get", {"name": "adm"})
    await c.wait_for(q)
    denied = await c.request("Mutation", "counter:internalInc", {"name": "adm"})
    assert denied["success"] is False and "Could not find public function" in denied["result"]
    await c.authenticate("Admin", ADMIN_KEY)
    for _ in range(200):
        if c.transitions and c.transitions[-1].end["identity"] == 1:
            break
        await asyncio.sleep(0.01)
    bump = c.transitions[-1]
    assert bump.end["identity"] == 1 and bump.start["identity"] == 0
    assert [m["queryId"] for m in bump.modifications] == [q], "queries re-run under the identity"
    ok = await c.request("Mutation", "counter:internalInc", {"name": "adm"})
    assert ok["success"] and ok["result"] == 1.0
    await c.authenticate("None")
    await c.close()


@pytest.mark.parametrize(("token_type", "value"), [("Admin", "wrong-key"), ("User", "a.b.c")])
async def test_refused_tokens_get_auth_error_then_close(
    store: Served, token_type: str, value: str
) -> None:
    c = await store.client()
    await c.authenticate(token_type, value)
    for _ in range(200):
        if c.failure is not None:
            break
        await asyncio.sleep(0.01)
    assert isinstance(c.failure, ServerError) and "AuthError" in str(c.failure)
    auth_error = next(m for m in c.messages if m["type"] == "AuthError")
    assert auth_error["baseVersion"] == 0 and auth_error["authUpdateAttempted"] is True
    assert ADMIN_KEY not in orjson.dumps(c.messages).decode()
    await c.close()


async def test_resent_mutation_of_a_session_runs_once(store: Served) -> None:
    first = await store.client()
    r1 = await first.request("Mutation", "counter:inc", {"name": "idem"}, request_id=0)
    await first.close()
    # The JS client reconnects with the same sessionId and re-sends unconfirmed mutations.
    again = await LightSyncClient(store.ws_url, session_id=first.session_id).connect()
    r2 = await again.request("Mutation", "counter:inc", {"name": "idem"}, request_id=0)
    assert r2["result"] == r1["result"] == 1.0 and r2["ts"] == r1["ts"]
    q = await again.subscribe("counter:get", {"name": "idem"})
    assert await again.wait_for(q) == 1.0, "executed once"
    # Another session with the same requestId is a different mutation.
    other = await store.client()
    r3 = await other.request("Mutation", "counter:inc", {"name": "idem"}, request_id=0)
    assert r3["result"] == 2.0
    await again.close()
    await other.close()


async def test_mutation_cut_off_by_a_disconnect_runs_once_across_the_reconnect(
    store: Served,
) -> None:
    first = await store.client()
    await first.send_raw(
        '{"type":"Mutation","requestId":7,"udfPath":"counter:inc","args":[{"name":"cut"}]}'
    )
    await first.close()  # gone before (or while) the mutation runs
    again = await LightSyncClient(store.ws_url, session_id=first.session_id).connect()
    resp = await again.request("Mutation", "counter:inc", {"name": "cut"}, request_id=7)
    assert resp["success"] and resp["result"] == 1.0
    q = await again.subscribe("counter:get", {"name": "cut"})
    assert await again.wait_for(q) == 1.0, "executed exactly once"
    await again.close()


async def test_mutations_of_one_socket_run_in_order(store: Served) -> None:
    c = await store.client()
    results = await asyncio.gather(
        *(c.request("Mutation", "counter:inc", {"name": "ord"}) for _ in range(20))
    )
    assert [r["result"] for r in sorted(results, key=lambda r: r["requestId"])] == [
        float(i) for i in range(1, 21)
    ]
    await c.close()


async def test_action_runs_and_answers(store: Served) -> None:
    c = await store.client()
    resp = await c.request("Action", "counter:echo", {"value": {"a": [1, "two"]}})
    assert resp == {
        "type": "ActionResponse",
        "requestId": 0,
        "success": True,
        "result": {"a": [1.0, "two"]},
        "logLines": [],
    }
    await c.close()


def small_buffer_socket(url: str) -> socket.socket:
    # A small receive buffer, so the kernel cannot hide a non-reading client for long.
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def test_slow_reader_skips_to_the_latest_state(tmp_path: Path) -> None:
    # A patient server (no drop while the client lags), unlike the shared fixture.
    async with serve_store(
        tmp_path / "slow.sqlite", ConnectionLimits(client_send_timeout_s=60)
    ) as store:
        await _slow_reader_skips(store)


async def _slow_reader_skips(store: Served) -> None:
    size = 1_500_000
    sub = {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [
        {"type": "Add", "queryId": 0, "udfPath": "counter:padded",
         "args": [{"name": "slow", "size": size}]}]}  # fmt: skip
    sock = small_buffer_socket(store.ws_url)
    async with connect(store.ws_url, max_size=None, max_queue=1, sock=sock) as ws:
        await ws.send(orjson.dumps({"type": "Connect", "sessionId": "slow", "connectionCount": 0,
                                    "lastCloseReason": "InitialConnect", "clientTs": 0}).decode())  # fmt: skip
        await ws.send(orjson.dumps(sub).decode())
        first = orjson.loads(await ws.recv())
        assert first["modifications"][0]["value"]["value"] == 0.0
        commits = 40
        pushed_before = store.gateway.metrics.transitions._value.get()
        for _ in range(commits):  # the client reads nothing meanwhile
            await inc(store, "slow")
        await asyncio.sleep(0.3)
        built = store.gateway.metrics.transitions._value.get() - pushed_before
        # Whatever the kernel buffers, the server builds nothing while the socket is full.
        assert built <= 6, f"{built} transitions built for a socket that is not reading"
        # Reading again: a few transitions, the last one at the latest state.
        last = None
        for _ in range(commits):
            try:
                message = orjson.loads(await asyncio.wait_for(ws.recv(), 2))
            except TimeoutError:
                break
            if message["type"] == "Transition" and message["modifications"]:
                last = message["modifications"][0]["value"]["value"]
                if last == float(commits):
                    break
        assert last == float(commits)
    assert store.gateway.metrics.dropped._value.get() == 0


async def test_client_that_never_reads_is_dropped_and_others_are_served(store: Served) -> None:
    healthy = await store.client()
    hq = await healthy.subscribe("counter:get", {"name": "nr"})
    await healthy.wait_for(hq)
    ws = await connect(
        store.ws_url,
        max_size=None,
        max_queue=1,
        sock=small_buffer_socket(store.ws_url),
        close_timeout=0.2,  # the server aborted the TCP connection: no close handshake
    )
    await ws.send('{"type":"Connect","sessionId":"nr","connectionCount":0,"clientTs":0}')
    await ws.send(
        orjson.dumps(
            {
                "type": "ModifyQuerySet",
                "baseVersion": 0,
                "newVersion": 1,
                "modifications": [
                    {
                        "type": "Add",
                        "queryId": 0,
                        "udfPath": "counter:padded",
                        "args": [{"name": "nr", "size": 500_000}],
                    }
                ],
            }
        ).decode()
    )
    count = 0
    for _ in range(60):
        count += 1
        await inc(store, "nr")
        assert await healthy.wait_for(hq, lambda v, n=count: v == n) == count
        if store.gateway.metrics.dropped._value.get() >= 1:
            break
        await asyncio.sleep(0.05)
    assert store.gateway.metrics.dropped._value.get() == 1
    await inc(store, "nr")
    assert await healthy.wait_for(hq, lambda v: v == count + 1) == count + 1
    assert store.gateway.metrics.connections._value.get() == 1
    await ws.close()
    await healthy.close()
