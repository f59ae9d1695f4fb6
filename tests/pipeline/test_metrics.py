"""The worker's ``/metrics`` endpoint."""

from __future__ import annotations

import socket

import httpx
import pytest

from marketpulse.pipeline._metrics import serve_metrics


def test_metrics_are_served_and_a_taken_port_is_named() -> None:
    port = serve_metrics(0)
    assert "marketpulse_stream" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{busy}"):
            serve_metrics(busy)
