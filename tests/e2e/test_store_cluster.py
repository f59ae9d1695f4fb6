"""Three real ``marketpulse serve`` nodes on one PostgreSQL database, through the official
clients (npm ``convex`` via tests/js/driver.mjs, PyPI ``convex``): a write on one node reaches
subscribers on another, conflicting writes on two nodes all count, a SIGKILLed node loses
nothing acknowledged, a mutation re-sent to another node after its node died runs once, a node
cut off from PostgreSQL resumes by itself, and the log compacts under a stream of commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from convex import ConvexClient

from marketpulse.reactive.sync.client import LightSyncClient
from marketpulse.reactive.values import json_to_value
from marketpulse.testing import AdminClient, StoreProcess, TcpRelay
from polling import wait_until
from scrape import metric

from .js_driver import JsDriver, node_available
from .test_store_clients import ADMIN_KEY, is_update

pytestmark = pytest.mark.e2e

NAMES = ("a", "b", "c")


def node(url: str, tmp_path: Path, name: str, options: str = "") -> StoreProcess:
    """A node serving tests/e2e/example_functions, named ``name`` in PostgreSQL (its
    connections are ``marketpulse-<name>`` in ``pg_stat_activity``)."""
    return StoreProcess(
        f"{url}?node={name}{options}",
        functions="example_functions",
        pythonpath=[Path(__file__).parent],
        admin_key=ADMIN_KEY,
        log_path=tmp_path / f"node-{name}.log",
    )


def health(store: StoreProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{store.url}/health", timeout=10).json()
    return body


class Nodes:
    def __init__(self, url: str, tmp_path: Path, options: str = "") -> None:
        self.url = url
        self.procs = {n: node(url, tmp_path, n, options) for n in NAMES}

    def __getitem__(self, name: str) -> StoreProcess:
        return self.procs[name]

    @contextlib.contextmanager
    def running(self) -> Iterator[Nodes]:
        """Every node started, and stopped at the end."""
        try:
            for proc in self.procs.values():
                proc.start()
            yield self
        finally:
            for proc in self.procs.values():
                proc.stop()

    def value(self, name: str, counter: str) -> float:
        with AdminClient(self[name].url, ADMIN_KEY, timeout=10) as admin:
            result: float = admin.query("counter:get", {"name": counter})
            return result

    def state(self, name: str) -> list[Any]:
        with AdminClient(self[name].url, ADMIN_KEY, timeout=10) as admin:
            rows: list[Any] = admin.query("counter:listAll", {})
            return sorted(rows, key=lambda d: d["name"])


@pytest.fixture
def nodes(postgres_url: str, tmp_path: Path) -> Iterator[Nodes]:
    with Nodes(postgres_url, tmp_path).running() as ns:
        yield ns


def sql(url: str, query: str, *args: Any) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def documents(url: str) -> dict[str, list[Any]]:
    """Every document PostgreSQL holds, by table."""
    tables: dict[str, list[Any]] = {}
    for r in sql(url, "SELECT tbl, doc FROM documents ORDER BY id"):
        tables.setdefault(r["tbl"], []).append(json_to_value(orjson.loads(r["doc"])))
    return tables


def assert_converged(ns: Nodes, names: tuple[str, ...] = NAMES) -> None:
    """Every node's memory equals PostgreSQL's documents and all are at the log's head.

    The example app has one table (``counters``, listed by ``counter:listAll``); the
    system tables are empty here (no scheduled jobs), which is checked too.
    """
    tables = documents(ns.url)
    assert set(tables) <= {"counters"}
    stored = sorted(
        ({"name": d["name"], "value": d["value"]} for d in tables.get("counters", [])),
        key=lambda d: d["name"],
    )

    def same() -> bool:
        return all(ns.state(n) == stored for n in names)

    wait_until(same, 20, "the nodes agreeing")
    head = sql(ns.url, "SELECT ts FROM log_head")[0]["ts"]
    for n in names:
        wait_until(lambda n=n: int(health(ns[n])["ts"]) == head, 20, f"node {n} at the log's head")


@pytest.mark.skipif(not node_available(), reason="node and tests/js/node_modules needed")
def test_a_subscriber_on_b_sees_a_mutation_sent_to_a(nodes: Nodes) -> None:
    js = JsDriver(nodes["b"].url)
    try:
        js.send(cmd="subscribe", id="s1", path="counter:get", args={"name": "x"})
        js.wait_for(is_update("s1", 0.0))
        writer = ConvexClient(nodes["a"].url)
        assert writer.mutation("counter:inc", {"name": "x", "by": 5}) == 5.0
        js.wait_for(is_update("s1", 5.0))
        assert nodes.value("c", "x") == 5.0
    finally:
        js.close()


def test_conflicting_increments_on_two_nodes_end_with_the_exact_total(nodes: Nodes) -> None:
    per_node = 1000
    acked: dict[str, list[float]] = {"a": [], "b": []}

    def write(name: str) -> None:
        client = ConvexClient(nodes[name].url)
        for _ in range(per_node):
            acked[name].append(client.mutation("counter:inc", {"name": "hot"}))

    threads = [threading.Thread(target=write, args=(n,)) for n in acked]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    total = 2 * per_node
    assert sorted(acked["a"] + acked["b"]) == [float(i) for i in range(1, total + 1)]
    wait_until(lambda: all(nodes.value(n, "hot") == total for n in NAMES), 20, "every increment")
    # Both nodes really interleaved (each saw the other's increments).
    assert max(acked["a"]) > per_node and max(acked["b"]) > per_node
    assert_converged(nodes)


def test_a_pipelined_connection_on_a_re_runs_behind_conflicts_with_b(nodes: Nodes) -> None:
    """One socket on node A sends its mutations without awaiting them (the store pipelines
    them: each runs while the previous one's commit is on its way to PostgreSQL) while a
    client on node B increments the same counter: B's commits make PostgreSQL refuse A's, and
    A's pipelined mutations computed on a refused one run again after it, in order."""
    on_a, on_b = 600, 300
    b_acked: list[float] = []

    def write_b() -> None:
        client = ConvexClient(nodes["b"].url)
        for _ in range(on_b):
            b_acked.append(client.mutation("counter:inc", {"name": "pipe"}))

    async def write_a() -> list[dict[str, Any]]:
        c = await LightSyncClient(LightSyncClient.ws_url(nodes["a"].url)).connect()
        try:
            return list(
                await asyncio.gather(
                    *(c.request("Mutation", "counter:inc", {"name": "pipe"}) for _ in range(on_a))
                )
            )
        finally:
            await c.close()

    conflicts = metric(nodes["a"].url, "marketpulse_commit_conflicts_total")
    groups = metric(nodes["a"].url, "marketpulse_commit_groups_total")
    b = threading.Thread(target=write_b)
    b.start()
    a_answers = asyncio.run(write_a())
    b.join(300)
    assert all(r["success"] for r in a_answers), a_answers[:3]
    a_acked = [float(r["result"]) for r in sorted(a_answers, key=lambda r: r["requestId"])]
    # In the order sent, each seeing the previous one's write (B's in between).
    assert a_acked == sorted(a_acked) and len(set(a_acked)) == on_a
    # Exactly once across both nodes: every value from 1 to the total acknowledged once.
    total = on_a + on_b
    assert sorted(a_acked + b_acked) == [float(i) for i in range(1, total + 1)]
    assert max(a_acked) > on_a and max(b_acked) > on_b, "the two nodes interleaved"
    wait_until(lambda: all(nodes.value(n, "pipe") == total for n in NAMES), 20, "every mutation")
    # A pipelined (several mutations per durable commit) and re-ran behind refused commits.
    assert metric(nodes["a"].url, "marketpulse_commit_groups_total") - groups < on_a / 2
    assert metric(nodes["a"].url, "marketpulse_commit_conflicts_total") > conflicts
    assert_converged(nodes)


@pytest.mark.skipif(not node_available(), reason="node and tests/js/node_modules needed")
def test_a_node_killed_with_sigkill_loses_nothing_acknowledged(nodes: Nodes) -> None:
    # The npm client, which keeps the mutations it sent in flight (the PyPI client's blocking
    # call would wait for the dead node forever).
    js = JsDriver(nodes["a"].url)
    try:
        # Pipelined, a node answers 400 within ms of the 50th: send more than that, and fewer
        # than a socket may queue (--max-pending-mutations, 1,024).
        for i in range(1000):
            js.send(cmd="mutation", via="ws", path="counter:inc", args={"name": "k"}, rid=f"w{i}")
        js.wait_for(lambda e: e.get("rid") == "w49", timeout=60)
        nodes["a"].kill()  # SIGKILL
        time.sleep(0.5)
        acked = [e["value"] for e in js.backlog if e.get("event") == "result"]
        while True:
            try:
                event = js.events.get_nowait()
            except Exception:
                break
            if event.get("event") == "result":
                acked.append(event["value"])
        acked.append(50.0)  # w49, consumed above
    finally:
        js.close()
    acked.sort()
    assert acked == [float(i) for i in range(1, len(acked) + 1)]
    assert len(acked) < 1000, "the kill came after every answer"
    # Every acknowledged increment is in PostgreSQL and on the survivors (those in flight
    # when the node died may have committed without their answers).
    for n in ("b", "c"):
        wait_until(lambda n=n: nodes.value(n, "k") >= len(acked), 20, f"node {n} has every ack")
    assert_converged(nodes, ("b", "c"))


@pytest.mark.skipif(not node_available(), reason="node and tests/js/node_modules needed")
def test_a_mutation_resent_to_another_node_after_its_node_died_runs_once(nodes: Nodes) -> None:
    with TcpRelay(nodes["a"].port) as relay:
        js = JsDriver(relay.url)
        try:
            assert js.call("mutation", "ws", "counter:inc", {"name": "r"}, "m1")["value"] == 1.0
            relay.hold_replies()
            js.send(cmd="mutation", via="ws", path="counter:inc", args={"name": "r"}, rid="m2")
            # Node A committed it (B sees it), but its answer never reached the client.
            wait_until(lambda: nodes.value("b", "r") == 2.0, 20, "node b sees r = 2")
            nodes["a"].kill()  # SIGKILL
            relay.switch(nodes["b"].port)
            relay.release_replies()
            # The client reconnects (to B now) and re-sends m2 under its (session, request).
            answer = js.wait_for(lambda e: e.get("rid") == "m2", timeout=60)
            assert answer == {"event": "result", "rid": "m2", "value": 2.0}
            time.sleep(0.5)
            assert nodes.value("b", "r") == nodes.value("c", "r") == 2.0
            assert js.call("mutation", "ws", "counter:inc", {"name": "r"}, "m3")["value"] == 3.0
        finally:
            js.close()


class Writers:
    """PyPI clients, one per node named, incrementing one counter until :meth:`stop`;
    what each call answered is kept."""

    def __init__(self, ns: Nodes, names: tuple[str, ...], counter: str) -> None:
        self.ns = ns
        self.counter = counter
        self.acked: list[float] = []
        self.acked_at: list[float] = []  # time.time() of each acknowledgement
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(n,)) for n in names]
        for t in self._threads:
            t.start()

    def _write(self, name: str) -> None:
        client = ConvexClient(self.ns[name].url)
        while not self._stop.is_set():
            try:
                self.acked.append(client.mutation("counter:inc", {"name": self.counter}))
                self.acked_at.append(time.time())
            except Exception as exc:
                self.failed.append(str(exc))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def assert_each_acknowledged_once(self) -> None:
        """Every failure was a clear one, and every acknowledged increment is in the total
        exactly once; an unacknowledged commit (its answer lost with the connection) may
        exist, but nothing twice."""
        for f in self.failed:
            assert "could not be committed" in f, f
        total = self.ns.value("a", self.counter)
        assert len(set(self.acked)) == len(self.acked)
        assert set(self.acked) <= {float(i) for i in range(1, int(total) + 1)}
        assert total - len(self.acked) <= len(self.failed)


def test_a_node_cut_off_from_postgres_resumes_with_nothing_lost_or_duplicated(
    nodes: Nodes,
) -> None:
    writers = Writers(nodes, ("a", "b"), "p")
    wait_until(lambda: len(writers.acked) >= 40, 20, "40 acks")
    for _ in range(3):  # B's pool and its LISTEN, again as they reconnect
        killed = sql(
            nodes.url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'marketpulse-b'",
        )
        assert killed
        time.sleep(0.3)
    count = len(writers.acked)
    # B (and A) write again by themselves.
    wait_until(lambda: len(writers.acked) >= count + 40, 20, "40 more acks")
    writers.stop()
    writers.assert_each_acknowledged_once()
    assert_converged(nodes)
    wait_until(lambda: health(nodes["b"])["status"] == "ok", 20, "node b healthy")


def test_the_log_compacts_under_a_stream_of_commits(postgres_url: str, tmp_path: Path) -> None:
    options = "&retention_s=1&compact_interval_s=0.5"
    with (
        node(postgres_url, tmp_path, "a", options) as a,
        node(postgres_url, tmp_path, "b", options),
    ):
        client = ConvexClient(a.url)
        sizes = []
        started = time.monotonic()
        n = 0
        # Past the retention window several times, and enough commits to tell a bounded log
        # from a growing one however slow the machine is (bounded: 60 s at most).
        while (time.monotonic() - started < 6.0 or n < 350) and (time.monotonic() - started < 60.0):
            for _ in range(50):
                n += 1
                client.mutation("counter:inc", {"name": f"s{n % 7}"})
            sizes.append(sql(postgres_url, "SELECT count(*) AS n FROM commits")[0]["n"])
        assert n > 300
        # Bounded: commits older than the retention window went, and keep going.
        assert sizes[-1] < n / 2
        assert max(sizes[len(sizes) // 2 :]) < n / 2
        # A node started now loads the state from the documents alone.
        with node(postgres_url, tmp_path, "c", options) as c:
            with AdminClient(c.url, ADMIN_KEY, timeout=10) as admin:
                total = sum(d["value"] for d in admin.query("counter:listAll", {}))
            assert total == n
