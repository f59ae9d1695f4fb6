"""Crons and scheduled actions on three real ``marketpulse serve`` nodes sharing one PostgreSQL
database (issue 17: "on several nodes sharing PostgreSQL it runs once").

* A cron declared in Python runs once per occurrence across the nodes, not once per node, and
  goes on when one node is SIGKILLed.
* An at-start job runs as the cluster starts (its first node), not as a node joins it.
* An action running on a node that is SIGKILLed is marked failed by another node once the dead
  node's lease (its ``nodes`` row, ``node_timeout_s``) lapses, exactly once, and never run again.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from marketpulse.testing import AdminClient, StoreProcess
from polling import wait_until

from .test_store_clients import ADMIN_KEY

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

NAMES = ("a", "b", "c")
NODE_TIMEOUT_S = 3.0


class Cluster:
    def __init__(self, url: str, tmp_path: Path) -> None:
        self.procs = {
            n: StoreProcess(
                f"{url}?node={n}&node_timeout_s={NODE_TIMEOUT_S}",
                functions="cluster_jobs",
                pythonpath=[Path(__file__).parent],
                admin_key=ADMIN_KEY,
                log_path=tmp_path / f"node-{n}.log",
            )
            for n in NAMES
        }

    def call(self, name: str, kind: str, path: str, args: dict[str, Any]) -> Any:
        with AdminClient(self.procs[name].url, ADMIN_KEY, timeout=10) as admin:
            return getattr(admin, kind)(path, args)

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]


@pytest.fixture
def cluster(postgres_url: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(postgres_url, tmp_path)
    try:
        for proc in c.procs.values():
            proc.start()
        yield c
    finally:
        for proc in c.procs.values():
            proc.stop()


def test_a_cron_runs_once_per_occurrence_across_the_nodes(cluster: Cluster) -> None:
    wait_until(lambda: len(cluster.call("a", "query", "jobs:ticks", {})) >= 4, 30, "four ticks")
    cluster.procs["a"].kill()  # the others go on scheduling it
    seen = len(cluster.call("b", "query", "jobs:ticks", {}))
    wait_until(
        lambda: len(cluster.call("b", "query", "jobs:ticks", {})) >= seen + 4,
        30,
        "four more ticks with node a dead",
    )
    ticks = cluster.call("c", "query", "jobs:ticks", {})
    # Each run saw exactly one pending job of the cron: its own occurrence.
    assert all(len(t["occurrences"]) == 1 for t in ticks), ticks
    occurrences = [t["occurrences"][0] for t in ticks]
    assert len(set(occurrences)) == len(occurrences), "an occurrence ran twice"
    assert occurrences == sorted(occurrences)
    gaps = [b - a for a, b in itertools.pairwise(occurrences)]
    assert min(gaps) >= 999.0, gaps  # 1 s apart: once per occurrence, not once per node
    # Three nodes each running it would make about three times as many runs as seconds.
    ran = [t["_creationTime"] for t in ticks]
    assert len(ticks) <= (max(ran) - min(ran)) / 1000.0 + 2, (len(ticks), ran)


def test_an_at_start_job_runs_once_per_cluster_start_not_per_node(cluster: Cluster) -> None:
    assert cluster.call("c", "query", "jobs:boots", {}) == 1, "b and c joined a live cluster"
    cluster.procs["b"].kill()
    cluster.procs["b"].start()  # rejoins while a and c are live
    assert cluster.call("b", "query", "jobs:boots", {}) == 1
    for proc in cluster.procs.values():
        proc.kill()
    # Every node's lease must lapse before the next start is the store's own start.
    time.sleep(NODE_TIMEOUT_S + 0.5)
    cluster.procs["c"].start()
    assert cluster.call("c", "query", "jobs:boots", {}) == 2


def test_an_action_on_a_killed_node_is_failed_once_by_another_node(cluster: Cluster) -> None:
    job_id = cluster.call("a", "mutation", "jobs:scheduleHold", {"name": "h", "seconds": 600})
    holder: list[str] = []

    def claimed() -> bool:
        job = cluster.call("b", "query", "jobs:job", {"id": job_id})
        if job["state"]["kind"] == "inProgress" and "claimedBy" in job:
            holder.append(job["claimedBy"])
            return True
        return False

    wait_until(claimed, 30, "a node claims the action")
    wait_until(lambda: cluster.call("b", "query", "jobs:holds", {"name": "h"}) == 1, 30, "it runs")
    owner = holder[0]
    assert owner in NAMES
    killed_at = time.monotonic()
    cluster.procs[owner].kill()
    other = next(n for n in NAMES if n != owner)
    job: dict[str, Any] = {}

    def failed() -> bool:
        job.update(cluster.call(other, "query", "jobs:job", {"id": job_id}))
        return bool(job["state"]["kind"] == "failed")

    wait_until(failed, NODE_TIMEOUT_S + 20, "another node fails the lost action")
    recovered_s = time.monotonic() - killed_at
    assert recovered_s >= NODE_TIMEOUT_S * 0.5, recovered_s  # not before the lease lapsed
    assert "node running it was lost" in job["state"]["error"]
    completed = job["completedTime"]
    # Never run again, and failed once: the record stays as the first node wrote it.
    time.sleep(NODE_TIMEOUT_S + 1.5)
    for n in cluster.alive():
        again = cluster.call(n, "query", "jobs:job", {"id": job_id})
        assert again["state"]["kind"] == "failed" and again["completedTime"] == completed
        assert cluster.call(n, "query", "jobs:holds", {"name": "h"}) == 1
    print(f"\nlost action failed by another node {recovered_s:.2f} s after the SIGKILL")
