"""The light sync client's URL handling and failures (the worker writes through it)."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.server import ServerConnection, serve

from marketpulse._aio import cancel_and_wait
from marketpulse.reactive.sync.client import LightSyncClient, ServerError


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
