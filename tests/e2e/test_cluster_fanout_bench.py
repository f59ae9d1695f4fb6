"""bench/cluster_fanout.py runs end to end in tiny configurations: real ``serve`` nodes on a
PostgreSQL database, sockets placed by market or spread over the nodes and over several
127.0.0.x source addresses, pushes counted on sampled and draining sockets, per-process CPU,
and more nodes than 4 when the descriptor limit cannot hold the connections on 4."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from .bench_run import BENCH, run_bench

pytestmark = pytest.mark.e2e


def test_capacity_steps_node_counts_with_sampled_and_draining_sockets(postgres_url: str) -> None:
    server = postgres_url.rsplit("/", 1)[0]  # the fixture skips when no server answers
    figures, _ = run_bench(
        "cluster_fanout.py",
        *("--pg", server, "--nodes", "1", "2", "--clients", "40", "--markets", "4"),
        *("--steps", "200", "--seconds", "1", "--sample-every", "4", "--connections", "0"),
        *("--per-source", "15"),
    )
    assert [run["nodes"] for run in figures["capacity"]] == [1, 2]
    for run in figures["capacity"]:
        assert run["dropped"] == run["failed_queries"] == 0 and run["failed_sockets"] == {}
        (step,) = run["steps"]
        # 10 sockets a market, 1 in 4 timed: the draining sockets' pushes count too, so what
        # the fleet received is well above what the timed sockets alone saw.
        assert step["pushes"] > 0 and step["sent_pushes_per_s"] > 0
        assert step["pushes_per_s"] >= 0.7 * step["sent_pushes_per_s"]
        assert step["pushes_per_s"] > 1.5 * step["pushes"]
        assert 0 < step["p50_ms"] <= step["p99_ms"] <= step["max_ms"]
        cpu = step["cpu"]
        # Each figure is there; a 1 s step of so few pushes may read 0 at 10 ms clock ticks.
        assert len(cpu["nodes"]) == run["nodes"] and sum(cpu["nodes"]) > 0
        assert min(cpu["fleet"], cpu["writer"], cpu["postgres"]) >= 0
        assert cpu["host"] + 0.05 >= cpu["ours"] > 0  # the host's figure includes ours
        assert run["peak_bound"]
    assert "connections" not in figures


def test_connections_take_more_nodes_when_the_fd_limit_cannot_hold_them_on_4(
    postgres_url: str,
) -> None:
    server = postgres_url.rsplit("/", 1)[0]
    # 2,150 descriptors leave 150 sockets per node (2,000 kept back): 650 need 5 nodes.
    figures, printed = run_bench(
        "cluster_fanout.py",
        *("--pg", server, "--nodes", "--connections", "650", "--per-source", "200"),
        *("--connection-markets", "10", "--seconds", "1"),
        fd_limit=2150,
    )
    conn = figures["connections"]
    assert figures["fd_limit"] == 2150
    assert conn["nodes"] == 5 and conn["client_processes"] == 5
    assert "RLIMIT_NOFILE is 2,150" in conn["nodes_why"] and "5 nodes" in printed
    assert conn["connections"] == conn["subscribed"] == 650
    assert conn["source_addresses"] == 4
    assert conn["dropped"] == conn["failed_queries"] == 0 and conn["failed_sockets"] == {}
    assert conn["pushes"] > 0 and conn["p50_ms"] <= conn["p99_ms"]
    assert conn["kib_per_connection"] > 0 and conn["node_cpu_ms_per_connection"] > 0
    assert conn["nodes_idle_cores"] >= 0 and conn["nodes_cores_at_3000"] > 0
    assert conn["load_average_before"] and conn["load_average_after"]


def test_frame_counter_counts_text_frames_across_any_split() -> None:
    sys.path.insert(0, str(BENCH))
    from _clients import FrameCounter

    server = ServerProtocol(state=State.OPEN)
    sizes = [0, 5, 125, 126, 300, 65_535, 65_536, 200_000, 17]
    for size in sizes:
        server.send_text(b"x" * size)
        if size == 300:
            server.send_frame(Frame(Opcode.PING, b"p"))  # not a push
    stream = b"".join(server.data_to_send())
    for step in (1, 3, 7, 1000, 70_000, len(stream)):
        counter = FrameCounter()
        counts = [
            counter.feed(memoryview(stream[i : i + step])) for i in range(0, len(stream), step)
        ]
        assert sum(counts) == counter.frames == len(sizes), step


def test_fleet_placement_sources_and_sampling() -> None:
    sys.path.insert(0, str(BENCH))
    from types import SimpleNamespace

    from cluster_fanout import fleet_subs

    nodes: Any = [SimpleNamespace(url=f"http://127.0.0.1:{port}") for port in (1001, 1002, 1003)]
    for placement in ("market", "spread"):
        subs = fleet_subs(nodes, 600, 6, per_source=250, placement=placement, sample_every=5)
        by_market: dict[str, set[str]] = {}
        for url, _, _, args, _ in subs:
            by_market.setdefault(args["ticker"], set()).add(url)
        assert len(by_market) == 6
        if placement == "market":  # one node per market, markets shared out evenly
            assert all(len(urls) == 1 for urls in by_market.values())
            assert len(set.union(*by_market.values())) == 3
        else:  # every market on every node
            assert all(len(urls) == 3 for urls in by_market.values())
        assert [s[1] for s in subs[249:251]] == ["127.0.0.2", "127.0.0.3"]
        assert {s[1] for s in subs} == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
        assert sum(s[4] for s in subs) == 600 // 5
        sampled = [s[3]["ticker"] for s in subs if s[4]]
        assert all(sampled.count(t) == 20 for t in by_market)  # 100 a market, 1 in 5 timed
