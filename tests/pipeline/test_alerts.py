"""Alerts are logged and POSTed as JSON to a real local webhook receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from marketpulse.pipeline._alerts import Alerter, RateWatch


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    got: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append(
                {"path": self.path, "type": self.headers["Content-Type"], **json.loads(body)}
            )
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", got
    server.shutdown()
    server.server_close()


async def test_alert_is_posted_and_repeats_are_suppressed(
    receiver: tuple[str, list[dict[str, Any]]],
) -> None:
    url, got = receiver
    alerter = Alerter(url, cooldown=60.0)
    assert await alerter.alert("s1", "stale", "stream is stale: no data for 31s", attempt=2)
    assert not await alerter.alert("s1", "stale", "again")
    assert await alerter.alert("s1", "gap_rate", "5+ gaps")
    assert [g["kind"] for g in got] == ["stale", "gap_rate"]
    first = got[0]
    assert first["path"] == "/hook" and first["type"] == "application/json"
    assert first["stream"] == "s1" and first["severity"] == "error"
    assert first["message"] == "stream is stale: no data for 31s"
    assert first["details"] == {"attempt": 2}


async def test_unreachable_webhook_does_not_raise() -> None:
    alerter = Alerter("http://127.0.0.1:9/none", timeout=1.0)
    assert await alerter.alert("s1", "stale", "x")


def test_rate_watch_fires_on_a_spike_only() -> None:
    w = RateWatch(window=60.0, threshold=3)
    assert not w.add(0.0)
    assert not w.add(30.0)
    assert not w.add(100.0)  # the first two left the window
    assert not w.add(110.0)
    assert w.add(120.0)
