"""Three real ``marketpulse serve`` nodes on one PostgreSQL database behind the real HAProxy
(the template of deploy/haproxy), through the official clients: a SIGKILLed node's npm
subscriber moves to another node by itself while writes go on, losing and duplicating nothing
acknowledged; a mutation whose answer died with its node is re-sent through the balancer and
runs once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from convex import ConvexClient

from marketpulse.testing import BalancerProcess, TcpRelay
from polling import wait_until

from .js_driver import JsDriver, node_available
from .test_store_cluster import NAMES, Nodes, assert_converged, documents

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not node_available(), reason="node and tests/js/node_modules needed"),
]


def stored(url: str, name: str) -> float:
    """Counter ``name`` as PostgreSQL's documents hold it."""
    found = [d["value"] for d in documents(url).get("counters", []) if d["name"] == name]
    return float(found[0]) if found else 0.0


def pin(balancer: BalancerProcess, name: str) -> None:
    """Send new clients to node ``name`` only (the others in maintenance)."""
    for other in NAMES:
        balancer.set_state(other, "ready" if other == name else "maint")


def release(balancer: BalancerProcess) -> None:
    for name in NAMES:
        balancer.set_state(name, "ready")


@pytest.fixture
def cluster(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Nodes, BalancerProcess]]:
    ns = Nodes(postgres_url, tmp_path)
    balancer = BalancerProcess([(n, ns[n].port) for n in NAMES], tmp_path / "lb")
    try:
        for proc in ns.procs.values():
            proc.start()
        balancer.start()
        wait_until(
            lambda: all(s.status == "UP" for s in balancer.servers().values()), 20, "every node up"
        )
        yield ns, balancer
    finally:
        balancer.stop()
        for proc in ns.procs.values():
            proc.stop()


def test_a_sigkilled_nodes_subscriber_resumes_elsewhere_and_nothing_is_lost(
    cluster: tuple[Nodes, BalancerProcess],
) -> None:
    nodes, balancer = cluster
    # The npm client on node A (its subscription and its own writes), the PyPI writer on
    # another node (leastconn), both through the balancer.
    pin(balancer, "a")
    js = JsDriver(balancer.url)
    acked: list[float] = []
    failed: list[str] = []
    stop = threading.Event()
    try:
        js.send(cmd="subscribe", id="s", path="counter:get", args={"name": "k"})
        js.wait_for(lambda e: e.get("id") == "s")
        assert balancer.servers()["a"].sessions == 1
        release(balancer)

        def write() -> None:
            client = ConvexClient(balancer.url)
            while not stop.is_set():
                try:
                    acked.append(client.mutation("counter:inc", {"name": "k"}))
                except Exception as exc:
                    failed.append(str(exc))

        writer = threading.Thread(target=write)
        writer.start()
        wait_until(lambda: len(acked) >= 30, 20, "30 acks")
        assert balancer.servers()["a"].sessions == 1, "the writer shares node A"
        npm_total = 300
        for i in range(npm_total):
            js.send(cmd="mutation", via="ws", path="counter:inc", args={"name": "k"}, rid=f"w{i}")
        answered = {20: js.wait_for(lambda e: e.get("rid") == "w20", timeout=60)}
        nodes["a"].kill()  # SIGKILL, with npm mutations in flight
        killed = time.monotonic()
        # A dead node pushes nothing more: a value past what PostgreSQL holds now is fresh.
        at_kill = stored(nodes.url, "k")
        # The npm subscription moves to B or C by itself and gets fresh values.
        fresh = js.wait_for(
            lambda e: e.get("id") == "s" and float(e["value"]) > at_kill, timeout=60
        )
        failover_s = time.monotonic() - killed
        # Every npm mutation is answered: those A never answered were re-sent elsewhere.
        for i in range(npm_total):
            if i not in answered:
                answered[i] = js.wait_for(lambda e, i=i: e.get("rid") == f"w{i}", timeout=60)
        npm = list(answered.values())
        states = balancer.servers()
        stop.set()
        writer.join(60)
    finally:
        stop.set()
        js.close()
    assert all(e["event"] == "result" for e in npm), [e for e in npm if e["event"] != "result"]
    values = sorted([float(e["value"]) for e in npm] + acked)
    total = nodes.value("b", "k")
    # Each acknowledged increment exactly once: distinct values, none past the total; and
    # nothing ran twice (a duplicate would leave a gap the failures cannot explain).
    assert len(set(values)) == len(values)
    assert values[-1] <= total
    assert total - len(values) <= len(failed)
    assert not failed, failed  # the PyPI writer's node never died
    assert values == [float(i) for i in range(1, int(total) + 1)]
    assert float(fresh["value"]) <= total
    assert states["a"].status.startswith("DOWN")
    assert states["b"].sessions + states["c"].sessions >= 2  # both clients, on the survivors
    assert_converged(nodes, ("b", "c"))
    print(f"failover: SIGKILL -> fresh value through the balancer in {failover_s:.2f}s")


def test_a_mutation_resent_through_the_balancer_after_its_node_died_runs_once(
    postgres_url: str, tmp_path: Path
) -> None:
    nodes = Nodes(postgres_url, tmp_path)
    for proc in nodes.procs.values():
        proc.start()
    # Node A sits behind a relay that can hold its answers back and then cut its connections.
    relay = TcpRelay(nodes["a"].port).start()
    ports = {"a": relay.port, "b": nodes["b"].port, "c": nodes["c"].port}
    balancer = BalancerProcess([(n, ports[n]) for n in NAMES], tmp_path / "lb")
    js: JsDriver | None = None
    try:
        balancer.start()
        wait_until(
            lambda: all(s.status == "UP" for s in balancer.servers().values()), 20, "every node up"
        )
        pin(balancer, "a")
        js = JsDriver(balancer.url)
        assert js.call("mutation", "ws", "counter:inc", {"name": "r"}, "m1")["value"] == 1.0
        release(balancer)
        relay.hold_replies()
        js.send(cmd="mutation", via="ws", path="counter:inc", args={"name": "r"}, rid="m2")
        # Node A committed it (B sees it), but its answer never reached the client.
        wait_until(lambda: nodes.value("b", "r") == 2.0, 20, "node b sees r = 2")
        nodes["a"].kill()  # SIGKILL
        relay.cut()  # its answer dies with it
        relay.stop()  # and its address refuses connections, as a dead node's does
        # The client reconnects through the balancer (to B or C) and re-sends m2 under its
        # (session, request): the original result, nothing written again.
        answer = js.wait_for(lambda e: e.get("rid") == "m2", timeout=60)
        assert answer == {"event": "result", "rid": "m2", "value": 2.0}
        time.sleep(0.5)
        assert nodes.value("b", "r") == nodes.value("c", "r") == 2.0
        assert js.call("mutation", "ws", "counter:inc", {"name": "r"}, "m3")["value"] == 3.0
        states = balancer.servers()
        assert states["b"].sessions + states["c"].sessions >= 1
    finally:
        if js is not None:
            js.close()
        balancer.stop()
        relay.stop()
        for proc in nodes.procs.values():
            proc.stop()
