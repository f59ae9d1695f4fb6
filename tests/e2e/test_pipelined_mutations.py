"""The official npm client sends many mutations without awaiting each, against a real
``marketpulse serve`` that pipelines them: they run in the order sent (each sees the previous
one's write), resolve in that order with their own results, and run exactly once, also when the
connection is cut mid-stream and the client re-sends what was unanswered."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from marketpulse.testing import TcpRelay

from .js_driver import JsDriver, node_available
from .test_store_clients import example_store, is_update

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not node_available(), reason="node and tests/js/node_modules needed"),
]


def send_all(js: JsDriver, calls: list[tuple[str, dict[str, Any]]]) -> None:
    for i, (path, args) in enumerate(calls):
        js.send(cmd="mutation", via="ws", path=path, args=args, rid=f"m{i}")


def results_in_order(js: JsDriver, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The clients' answers, in the order its promises resolved."""
    return [
        js.wait_for(lambda e: str(e.get("rid", "")).startswith("m"), timeout=timeout)
        for _ in range(count)
    ]


def test_many_unawaited_mutations_run_and_resolve_in_order_once(tmp_path: Path) -> None:
    count = 400
    calls: list[tuple[str, dict[str, Any]]] = [("counter:inc", {"name": "p"})] * count
    calls[150] = ("counter:incThenFail", {"name": "p"})  # fails, writes nothing
    calls[151] = ("counter:inc", {"name": "p", "by": 10})
    with example_store(tmp_path / "store.sqlite") as store:
        js = JsDriver(store.url)
        try:
            js.send(cmd="subscribe", id="s", path="counter:get", args={"name": "p"})
            js.wait_for(is_update("s", 0))
            send_all(js, calls)
            answers = results_in_order(js, count)
            assert [a["rid"] for a in answers] == [f"m{i}" for i in range(count)], "in order"
            expected: list[Any] = []
            value = 0.0
            for path, args in calls:
                if path == "counter:inc":
                    value += args.get("by", 1.0)
                    expected.append({"event": "result", "value": value})
                else:
                    expected.append({"event": "failed"})
            got = [{k: a[k] for k in ("event", "value") if k in a} for a in answers]
            assert got == expected
            # Exactly once: the counter holds the sum of what was acknowledged.
            js.wait_for(is_update("s", value))
        finally:
            js.close()


def test_a_cut_connection_mid_pipeline_loses_and_repeats_nothing(tmp_path: Path) -> None:
    count = 300
    with (
        example_store(tmp_path / "store.sqlite") as store,
        TcpRelay(store.port) as relay,
    ):
        js = JsDriver(relay.url)
        try:
            assert js.call("mutation", "ws", "counter:inc", {"name": "c"}, "w")["value"] == 1.0
            # The replies stop reaching the client while it keeps sending: the store runs
            # them all, then the connection is reset with its answers lost.
            relay.hold_replies()
            send_all(js, [("counter:inc", {"name": "c"})] * count)
            time.sleep(1.0)
            relay.cut()
            relay.release_replies()
            # The client reconnects and re-sends every unanswered mutation (same session):
            # each gets its original answer and none runs again.
            answers = results_in_order(js, count)
            assert [a.get("value") for a in answers] == [float(i) for i in range(2, count + 2)]
            r = js.call("mutation", "ws", "counter:inc", {"name": "c"}, "after")
            assert r["value"] == float(count + 2), "each ran exactly once"
        finally:
            js.close()
