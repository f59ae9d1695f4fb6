"""The light sync client's URL handling (the worker writes through it)."""

from __future__ import annotations

import pytest

from marketpulse.reactive.sync.client import LightSyncClient


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
