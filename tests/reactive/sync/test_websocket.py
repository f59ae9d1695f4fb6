"""SyncSocket over a real server: no per-socket task while idle, flow control, routing, shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from marketpulse.reactive.limits import ConnectionLimits
from marketpulse.reactive.sync.client import RawSubscriber, ServerError
from marketpulse.reactive.sync.connection import SyncConnection
from marketpulse.reactive.sync.websocket import _framed, is_sync_path

from .serving import Served, serve_store
from .test_connection import LIMITS, inc, small_buffer_socket


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    async with serve_store(tmp_path / "s.sqlite", LIMITS) as served:
        yield served


def _parsed(frame: bytes) -> Frame:
    """``frame`` read back as a client reads a server's frame (unmasked)."""
    reader = StreamReader()
    reader.feed_data(frame)
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        parsed: Frame = done.value
        return parsed
    raise AssertionError("the frame was not complete")


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_a_fan_out_frame_is_one_text_frame_at_every_length_encoding(size: int) -> None:
    payload = b"x" * size
    frame = _parsed(_framed(payload))
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == payload


def test_frames_are_shared_by_payload_identity_only() -> None:
    a, b = b'{"v":1}', b'{"v":2}'
    first = _framed(a)
    assert _framed(a) is first, "the same payload is framed once"
    assert _parsed(_framed(b)).data == b
    twin = bytes(bytearray(a))  # equal bytes, another object
    assert _parsed(_framed(twin)).data == a
    assert _parsed(_framed(a)).data == a


def _server_tasks() -> list[asyncio.Task[Any]]:
    # Tasks of the server side of a socket (the test's own clients are protocols, no tasks).
    return [
        t
        for t in asyncio.all_tasks()
        if "SyncConnection" in getattr(t.get_coro(), "__qualname__", "")
        or "WebSocket" in getattr(t.get_coro(), "__qualname__", "")
    ]


async def test_idle_sockets_cost_no_task(store: Served) -> None:
    loop = asyncio.get_running_loop()
    port = int(store.url.rsplit(":", 1)[1])
    seen: list[int] = []

    async def subscribe(i: int) -> RawSubscriber:
        _, sub = await loop.create_connection(
            lambda: RawSubscriber(
                store.ws_url, "counter:get", {"name": f"idle{i % 4}"}, lambda m, ns: seen.append(ns)
            ),
            "127.0.0.1",
            port,
        )
        await asyncio.wait_for(sub.subscribed, 10)
        return sub

    # The first socket starts the one watchdog task that serves every socket.
    subscribers = [await subscribe(0)]
    before = len(asyncio.all_tasks())
    subscribers += await asyncio.gather(*(subscribe(i) for i in range(1, 40)))
    assert store.gateway.metrics.connections._value.get() == 40
    # 39 more subscribed sockets: not one more task (the test's clients are protocols too).
    assert len(asyncio.all_tasks()) == before
    # A commit fans out to all 10 subscribers of idle1 from one callback, no task per socket.
    received = len(seen)
    await inc(store, "idle1")
    for _ in range(100):
        if len(seen) >= received + 10:
            break
        await asyncio.sleep(0.02)
    assert len(seen) == received + 10
    assert len(asyncio.all_tasks()) == before
    for sub in subscribers:
        sub.close()


async def test_raw_subscriber_reports_a_refused_handshake(tmp_path: Path) -> None:
    """A socket past the per-address cap is answered 503 before any upgrade: the lean client
    fails at once with the status, instead of waiting for a Transition that never comes."""
    async with serve_store(
        tmp_path / "s.sqlite", ConnectionLimits(max_connections_per_client=1)
    ) as store:
        loop = asyncio.get_running_loop()
        port = int(store.url.rsplit(":", 1)[1])

        async def subscribe() -> RawSubscriber:
            _, sub = await loop.create_connection(
                lambda: RawSubscriber(store.ws_url, "counter:get", {"name": "x"}, lambda m, ns: 0),
                "127.0.0.1",
                port,
            )
            return sub

        first = await subscribe()
        await asyncio.wait_for(first.subscribed, 10)
        second = await subscribe()
        with pytest.raises(ServerError, match="HandshakeRefused: HTTP 503"):
            await asyncio.wait_for(second.subscribed, 5)
        assert isinstance(second.failure, ServerError)
        assert first.failure is None
        first.close()


async def test_mutation_task_exists_only_while_mutations_are_pending(store: Served) -> None:
    c = await store.client()
    q = await c.subscribe("counter:get", {"name": "m"})
    await c.wait_for(q)
    assert _server_tasks() == []
    results = await asyncio.gather(
        *(c.request("Mutation", "counter:inc", {"name": "m", "by": 1.0}) for _ in range(5))
    )
    assert [r["success"] for r in results] == [True] * 5
    assert await c.wait_for(q, lambda v: v == 5.0) == 5.0
    await asyncio.sleep(0.05)
    assert _server_tasks() == [], "the mutation worker exits once the queue is empty"
    await c.close()


async def test_unknown_websocket_paths_are_refused_and_sync_still_served(store: Served) -> None:
    base = store.url.replace("http://", "ws://")
    for path in ("/api/nope", "/api/1.0/sync/extra", "/", "/sync"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(base + path):
                pass
        assert refused.value.response.status_code == 403, path
    c = await store.client()
    q = await c.subscribe("counter:get", {"name": "after"})
    assert await c.wait_for(q) == 0.0
    await c.close()


def test_sync_paths() -> None:
    for path in (
        "/api/sync",
        "/api/1.48.0/sync",
        "//api//sync",
        "/api/1.0/sync?x=1",
        "/api/%31/sync",
    ):
        assert is_sync_path(path), path
    for path in ("/api/a/b/sync", "/api/sync/", "/sync", "/api/syncx", "/", ""):
        assert not is_sync_path(path), path


def _only_connection(store: Served) -> SyncConnection:
    members = [m for m in store.gateway.watchdog._members if isinstance(m, SyncConnection)]
    assert len(members) == 1
    return members[0]


async def test_paused_socket_gets_one_transition_with_the_latest_state_on_resume(
    tmp_path: Path,
) -> None:
    async with serve_store(
        tmp_path / "p.sqlite", ConnectionLimits(client_send_timeout_s=60)
    ) as store:
        transitions = store.gateway.metrics.transitions._value
        sub = {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [
            {"type": "Add", "queryId": 0, "udfPath": "counter:padded",
             "args": [{"name": "p", "size": 400_000}]}]}  # fmt: skip
        sock = small_buffer_socket(store.ws_url)
        async with connect(store.ws_url, max_size=None, max_queue=1, sock=sock) as ws:
            await ws.send('{"type":"Connect","sessionId":"p","connectionCount":0,"clientTs":0}')
            await ws.send(orjson.dumps(sub).decode())
            first = orjson.loads(await ws.recv())
            assert first["modifications"][0]["value"]["value"] == 0.0
            conn = _only_connection(store)
            # The client reads nothing now: commit until the server's transport pauses.
            value = 0
            while conn._stalled_since is None:
                value += 1
                await inc(store, "p")
                assert value < 50, "the transport never paused"
            paused_at = transitions.get()
            for _ in range(10):
                value += 1
                await inc(store, "p")
            await asyncio.sleep(0.2)
            assert transitions.get() == paused_at, "nothing is built while the socket is paused"
            # Read again: whatever was buffered before the pause, then exactly one more
            # Transition, at the latest state.
            values = []
            while not values or values[-1] != float(value):
                message = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
                if message["type"] == "Transition" and message["modifications"]:
                    values.append(message["modifications"][0]["value"]["value"])
            await asyncio.sleep(0.2)
            assert transitions.get() == paused_at + 1
            assert conn._stalled_since is None
            # Everything before the last one predates the pause (at most what filled the buffer).
            assert all(v <= value - 10 for v in values[:-1]), values
        assert store.gateway.metrics.dropped._value.get() == 0


async def test_shutdown_closes_sync_sockets_with_1012(tmp_path: Path) -> None:
    async with serve_store(tmp_path / "d.sqlite", LIMITS) as store:
        ws = await connect(store.ws_url)
        await ws.send('{"type":"Connect","sessionId":"d","connectionCount":0,"clientTs":0}')
        async with httpx.AsyncClient() as http:
            assert (await http.get(store.url + "/health")).status_code == 200
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
