"""The light sync client's URL handling and failures (the worker writes through it), and the
raw subscriber's frame parsing."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from marketpulse._aio import cancel_and_wait
from marketpulse.reactive.sync.client import LightSyncClient, RawSubscriber, ServerError
from marketpulse.reactive.sync.websocket import _framed
from marketpulse.reactive.values import encode_ts


@pytest.mark.parametrize(
    ("http_url", "ws_url"),
    [
        ("http://127.0.0.1:3210", "ws://127.0.0.1:3210/api/1.48.0/sync"),
        ("http://127.0.0.1:3210/", "ws://127.0.0.1:3210/api/1.48.0/sync"),
        ("https://store.example:443", "wss://store.example:443/api/1.48.0/sync"),
        ("https://store.example/prefix/", "wss://store.example/prefix/api/1.48.0/sync"),
    ],
)
def test_ws_url_keeps_the_store_s_security(http_url: str, ws_url: str) -> None:
    assert LightSyncClient.ws_url(http_url) == ws_url


async def test_a_request_on_a_socket_closed_under_it_fails_with_server_error() -> None:
    """A send that finds the socket closed before the reader noticed is a ServerError too."""

    async def close_after_connect(ws: ServerConnection) -> None:
        await ws.recv()  # the client's Connect
        await ws.close()

    async with serve(close_after_connect, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = LightSyncClient(f"ws://127.0.0.1:{port}/api/1.48.0/sync")
        await client.connect()
        # Stop the reader so it cannot record the close first: the send must meet it.
        assert client._reader is not None
        await cancel_and_wait(client._reader)
        assert client._ws is not None
        await asyncio.wait_for(client._ws.wait_closed(), 5)
        with pytest.raises(ServerError, match="connection lost"):
            await client.request("Mutation", "seq:relaxed", {})
        assert not client._pending
        await client.close()


def _transition(n: int, pad: int) -> bytes:
    """The ``n``-th Transition of a chain from the start, its value padded to ``pad`` bytes."""

    def version(i: int) -> dict[str, object]:
        return {"querySet": min(i, 1), "identity": 0, "ts": encode_ts(i)}

    return orjson.dumps(
        {
            "type": "Transition",
            "startVersion": version(n - 1),
            "endVersion": version(n),
            "modifications": [
                {"type": "QueryUpdated", "queryId": 0, "value": "x" * pad, "logLines": []}
            ],
        }
    )


async def _raw_subscriber(
    handler: Callable[[ServerConnection], Awaitable[None]],
) -> tuple[Server, RawSubscriber, list[int]]:
    """A websockets server running ``handler``, a RawSubscriber connected to it, and the
    lengths of the values it receives, in order."""
    sizes: list[int] = []

    def on_transition(message: dict[str, Any], received_ns: int) -> None:
        sizes.extend(len(m["value"]) for m in message["modifications"])

    server = await serve(handler, "127.0.0.1", 0, compression=None)
    port = server.sockets[0].getsockname()[1]
    url = f"ws://127.0.0.1:{port}/api/1.48.0/sync"
    _, sub = await asyncio.get_running_loop().create_connection(
        lambda: RawSubscriber(url, "a:q", {}, on_transition), "127.0.0.1", port
    )
    return server, sub, sizes


async def test_raw_subscriber_reads_frames_of_every_length_split_anywhere() -> None:
    """Its own frame parser (after the handshake): 7-bit, 16-bit and 64-bit lengths, frames
    split across reads at every kind of boundary, a ping answered, a close frame obeyed."""
    pads = [10, 300, 70_000]
    answered = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # Connect
        await ws.recv()  # ModifyQuerySet
        frames = [_framed(_transition(n, pad)) for n, pad in enumerate(pads, 1)]
        stream = b"".join(frames)
        second, third = len(frames[0]), len(frames[0]) + len(frames[1])
        # Cut inside a header, inside each kind of extended length, inside a payload (twice
        # in a row), on a frame's boundary, and so on to the end.
        cuts = [0, 1, 3, 30, 31, second, second + 3, third - 9, third + 5, 50_000, len(stream)]
        assert cuts == sorted(cuts)
        for a, b in itertools.pairwise(cuts):
            ws.transport.write(stream[a:b])
            await asyncio.sleep(0.02)
        await asyncio.wait_for(await ws.ping(), 5)
        answered.set()
        await ws.close()

    server, sub, sizes = await _raw_subscriber(handler)
    async with server:
        await asyncio.wait_for(sub.subscribed, 5)
        await asyncio.wait_for(answered.wait(), 5)
        for _ in range(100):
            if sub._transport is not None and sub._transport.is_closing():
                break
            await asyncio.sleep(0.01)
    assert sizes == [len(orjson.dumps("x" * p)) - 2 for p in pads]
    assert sub.failure is None
    assert sub._transport is not None and sub._transport.is_closing()


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (b"\x82\x01x", "unexpected frame 0x82"),  # binary
        (b"\x01\x01x", "unexpected frame 0x01"),  # a fragment
        (b"\x81\x81abcdx", "masked frame"),
    ],
)
async def test_raw_subscriber_refuses_frames_the_store_never_sends(
    frame: bytes, error: str
) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.recv()
        await ws.send(_transition(1, 1).decode())
        ws.transport.write(frame)
        await ws.wait_closed()

    server, sub, _ = await _raw_subscriber(handler)
    async with server:
        await asyncio.wait_for(sub.subscribed, 5)
        for _ in range(100):
            if sub.failure is not None:
                break
            await asyncio.sleep(0.01)
    assert isinstance(sub.failure, ServerError) and error in str(sub.failure)


async def test_raw_subscriber_hands_over_the_start_of_an_incomplete_frame() -> None:
    """``unparsed()`` is what a reader taking the socket over must feed first."""
    frame = _framed(_transition(1, 500))
    half_sent, go_on = asyncio.Event(), asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.recv()
        ws.transport.write(frame[:200])
        half_sent.set()
        await go_on.wait()
        ws.transport.write(frame[200:])
        await ws.wait_closed()

    server, sub, sizes = await _raw_subscriber(handler)
    async with server:
        await asyncio.wait_for(half_sent.wait(), 5)
        for _ in range(100):
            if sub.unparsed():
                break
            await asyncio.sleep(0.01)
        assert sub.unparsed() == frame[:200]
        go_on.set()
        await asyncio.wait_for(sub.subscribed, 5)
        assert sub.unparsed() == b"" and sizes == [500]
        sub.close()


async def test_debug_frame_logs_never_show_the_admin_key_or_a_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker writes as admin through this client; at DEBUG ``websockets`` logs each frame
    (its first 48 and last 24 characters): an Authenticate's would show the key's tail."""
    from .serving import ADMIN_KEY, serve_store

    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.signature-is-a-secret-too"
    caplog.set_level(logging.DEBUG, logger="websockets")
    async with serve_store(tmp_path / "s.sqlite") as served:
        admin = await served.client()
        await admin.authenticate("Admin", ADMIN_KEY)
        q = await admin.subscribe("counter:listAll")
        await admin.wait_for(q)
        user = await served.client()
        await user.authenticate("User", token)
        await asyncio.sleep(0.1)
        await admin.close()
        await user.close()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("websockets")]
    assert any("ModifyQuerySet" in line for line in lines)  # frames are logged...
    for secret in (ADMIN_KEY, token):  # ...but no 8 characters of a secret
        assert not any(secret[i : i + 8] in line for line in lines for i in range(len(secret) - 8))
    assert sum("Authenticate [redacted]" in line for line in lines) == 2
