"""The whole pipeline in cluster mode: the worker writes through HAProxy to three store nodes
on PostgreSQL while the simulator's faults run (skipped frames, a dropped connection) and the
node the worker writes to is SIGKILLed; afterwards the books served, through the balancer and
by every node, equal the simulator's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from marketpulse._balancer import BalancerProcess
from marketpulse.pipeline.config import TASK_QUEUE
from marketpulse.pipeline.workflow import KalshiStreamWorkflow
from marketpulse.testing import AdminClient, LocalSystem, canonical_book
from polling import wait_until

from .test_pipeline import fast_stream

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture
def system(tmp_path: Path, postgres_url: str) -> Iterator[LocalSystem]:
    s = LocalSystem(tmp_path)
    try:
        s.start_temporal()
        s.start_cluster(postgres_url, 3)
        s.start_simulator(markets=4, rate=100, seed=7)
        s.start_worker()

        async def start() -> None:
            client = await s.client()
            await client.start_workflow(
                KalshiStreamWorkflow.run,
                fast_stream(s.sim_markets()),
                id="e2e-cluster-stream",
                task_queue=TASK_QUEUE,
            )

        asyncio.run(start())
        yield s
    finally:
        s.stop()


def test_books_equal_the_simulators_after_faults_and_a_node_kill(system: LocalSystem) -> None:
    tickers = system.sim_markets()
    wait_until(
        lambda: all(system.store_book(t) is not None for t in tickers), 120, "every book stored"
    )
    balancer = system.procs["balancer"]
    assert isinstance(balancer, BalancerProcess)
    # The node(s) holding the worker's write session.
    busy = [n for n, s in balancer.servers().items() if s.sessions > 0] or ["n1"]
    victim = busy[0]
    for i in range(3):
        system.sim("skip_seq", count=1)
        time.sleep(0.5)
        if i == 1:
            system.sim("drop_connection")
    system.procs[f"store-{victim}"].kill()  # SIGKILL, mid-stream
    time.sleep(3.0)  # order flow goes on through the survivors
    skipped_before = system.sim_stats()["faults"]["skipped"]
    assert skipped_before >= 1
    system.sim("pause")
    try:
        wait_until(lambda: system.converged(tickers), 60, "the books converged")
        # Every surviving node serves the same books (the balancer showed one of them).
        for name, proc in system.procs.items():
            if not name.startswith("store-") or name == f"store-{victim}":
                continue
            with AdminClient(proc.url, timeout=10, format="json") as node:

                def same(node: AdminClient = node) -> bool:
                    return all(
                        canonical_book(
                            node.query("marketData:getOrderbook", {"ticker": t, "depth": 10})
                        )
                        == system.sim_book(t)
                        for t in tickers
                    )

                wait_until(same, 30, "the nodes agreeing")
        assert balancer.servers()[victim].status.startswith("DOWN")
    finally:
        system.sim("resume")
