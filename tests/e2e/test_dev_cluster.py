"""``marketpulse dev --store-nodes 3 --db postgresql://...``: three store nodes behind HAProxy,
the worker writing through it; a subscriber through the balancer gets market data, and goes on
getting it when the nodes it and the worker were on are SIGKILLed."""

from __future__ import annotations

import os
import queue
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from marketpulse._balancer import BalancerProcess
from marketpulse.testing import AdminClient, DevProcess
from polling import wait_until

from .js_driver import JsDriver, node_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(400),
    pytest.mark.skipif(not node_available(), reason="node and tests/js/node_modules needed"),
]


class Subscriber:
    """The npm client subscribed to a query through the balancer; records when each value
    arrives."""

    def __init__(self, url: str, path: str, args: dict[str, Any]) -> None:
        self.js = JsDriver(url)
        self.js.send(cmd="subscribe", id="s", path=path, args=args)
        self.values: list[tuple[float, Any]] = []

    def since(self, t: float) -> set[str]:
        """The distinct values received after ``t`` (a reconnect re-sends the current one)."""
        while True:
            try:
                event = self.js.events.get_nowait()
            except queue.Empty:
                break
            if event.get("id") == "s" and event["event"] == "update":
                self.values.append((time.monotonic(), event["value"]))
        return {repr(v) for at, v in self.values if at > t and v is not None}


def test_dev_runs_store_nodes_behind_the_balancer_and_survives_a_node_kill(
    tmp_path: Path, postgres_url: str
) -> None:
    data = tmp_path / "data"
    dev = DevProcess(
        data,
        log_path=tmp_path / "dev.log",
        sim_markets=3,
        sim_rate=60,
        db=postgres_url,
        store_nodes=3,
    )
    dev.start(timeout=240)
    sub: Subscriber | None = None
    try:
        info = dev.ready_info()
        assert len(info["nodes"]) == 3
        assert {"balancer", "store-n1", "store-n2", "store-n3"} <= set(info["names"])
        assert f"{dev.url}/" in (tmp_path / "dev.log").read_text()  # the balancer's URL
        assert httpx.get(f"{dev.url}/", timeout=10).status_code == 200  # the dashboard
        with AdminClient(dev.url, timeout=10, format="json") as admin:
            wait_until(
                lambda: bool(admin.query("marketData:getStreamStatus", {})), 60, "a stream status"
            )
            ticker = admin.query("marketData:getStreamStatus", {})[0]["markets"][0]
        sub = Subscriber(dev.url, "marketData:getOrderbook", {"ticker": ticker})
        wait_until(lambda: len(sub.since(0)) >= 3, 60, "three pushes")
        # dev's balancer, seen through its admin socket.
        balancer = BalancerProcess([], data / "balancer", port=dev.port)
        states = balancer.servers()
        assert set(states) == {"n1", "n2", "n3"}
        busy = [n for n, s in states.items() if s.sessions > 0]
        assert 1 <= len(busy) <= 2, states  # the subscriber's and the worker's sessions
        killed = time.monotonic()
        for name in busy:
            os.killpg(dev.child_pid(f"store-{name}"), signal.SIGKILL)
        # Fresh books keep coming through the balancer (the worker writes through it too).
        wait_until(lambda: len(sub.since(killed + 1.0)) >= 3, 60, "three pushes after the kill")
        # dev restarts the killed nodes; HAProxy takes them back once /health answers.
        wait_until(
            lambda: all(s.status == "UP" for s in balancer.servers().values()), 60, "every node up"
        )
    finally:
        if sub is not None:
            sub.js.close()
        dev.stop()
