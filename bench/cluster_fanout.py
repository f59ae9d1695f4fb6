"""Fan-out across store nodes on one PostgreSQL database (issue 14): capacity with 1, 2 and 4
nodes, and many subscribed connections across 4 nodes.

Every node is a real ``marketpulse serve --db postgresql://…`` on one database created for
the run (and dropped after). Subscribers are lean one-query sockets (``RawSubscriber``), each
holding a ``marketData:getPrice`` subscription, spread evenly over the nodes (directly, no
balancer), in spawned child processes. One writer sends stamped ``marketData:applyUpdates``
batches (20 a second) over HTTP to the first node only; the other nodes get them through the
PostgreSQL log. Latency is the price's stamp (its send time) → receipt by a subscriber.

1. Capacity: the same fleet (``--clients``) against 1, 2 and 4 nodes. The push rate steps up
   (``--steps``, bounded); a step's figure is the pushes/s delivered whose send time fell in
   it, with each node's CPU. Capacity is the highest step delivered with p99 ≤ 100 ms; printed
   with the ratio to one node (goal: 2 nodes ≥ 1.6× one node), beside the peak delivered at
   any p99 and its ratio.
2. Connections: ``--connections`` sockets across 4 nodes, from several 127.0.0.x source
   addresses (one address pair has ~28k ephemeral ports); memory per connection (the nodes'
   RSS before and after, divided) and latency at 3,000 pushes/s (goal: p99 ≤ 200 ms at
   100,000 connections).

The subscribers, the writer and every node share this host's cores: the host's load average is
printed with the figures. Each process holds at most its hard ``RLIMIT_NOFILE`` of sockets
(raised to it here); a node count × that limit bounds part 2 on this host.

    python bench/cluster_fanout.py [--clients 1000] [--connections 4000] [--seconds 5] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _clients import Fleet
from _common import FLEET_FLAGS, cpu_seconds, emit, print_table, rss_kib
from cluster import database
from fanout import _publish, batch_size, seed_markets, tickers
from marketpulse.reactive.admission import raise_fd_limit
from marketpulse.reactive.sync.client import LightSyncClient
from marketpulse.testing import AdminClient, StoreProcess, summarize_ms

GOAL_CAPACITY_P99_MS = 100.0
GOAL_TWO_NODE_RATIO = 1.6
GOAL_CONNECTIONS = 100_000
GOAL_CONNECTIONS_P99_MS = 200.0
CONNECTIONS_PUSHES_PER_S = 3000.0
PER_SOURCE = 20_000
"""Sockets per 127.0.0.x source address: under the 28,232 ports of the default
``ip_local_port_range``, which a bound source address does not share between destinations."""
FD_MARGIN = 200
"""Descriptors a node or fleet process keeps for itself (PostgreSQL, logs, listeners)."""
SERVE_FLAGS = (*FLEET_FLAGS, "--max-connections", "0")
LATENCY_HEADERS = ("p50 ms", "p99 ms", "p999 ms", "max ms")


def latency_cells(figures: dict[str, Any]) -> list[float]:
    """The table cells under :data:`LATENCY_HEADERS`."""
    return [figures["p50_ms"], figures["p99_ms"], figures["p999_ms"], figures["max_ms"]]


def load_average() -> str:
    """The host's 1/5/15-minute load averages."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


@contextmanager
def cluster(pg: str, nodes: int, markets: int) -> Iterator[list[StoreProcess]]:
    """``nodes`` serve processes on a fresh database, ``markets`` markets seeded at price 0.5."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-cluster-fanout-") as tmp,
        database(pg) as url,
        ExitStack() as stack,
    ):
        folder = Path(tmp)
        procs = [
            stack.enter_context(
                StoreProcess(
                    url,
                    functions="marketpulse.marketdata.functions",
                    extra=SERVE_FLAGS,
                    log_path=folder / f"{nodes}-nodes-{i}.log",
                )
            )
            for i in range(nodes)
        ]
        with AdminClient(procs[0].url, procs[0].admin_key) as admin:
            seed_markets(admin, tickers(markets))
        yield procs


def fleet_subs(
    nodes: Sequence[StoreProcess], sockets: int, markets: int, per_source: int | None
) -> list[tuple[str, str | None, str, dict[str, Any]]]:
    """One getPrice socket per entry: nodes round-robin, every node's sockets over all the
    markets (as a balancer would spread them, not one node per market), and (unless
    ``per_source`` is None) a new 127.0.0.x source address every ``per_source`` sockets."""
    names = tickers(markets)
    urls = [LightSyncClient.ws_url(n.url) for n in nodes]
    return [
        (
            urls[i % len(urls)],
            f"127.0.0.{2 + i // per_source}" if per_source else None,
            "marketData:getPrice",
            {"ticker": names[(i // len(urls)) % markets]},
        )
        for i in range(sockets)
    ]


def writer(node: StoreProcess) -> tuple[AdminClient, Any]:
    """An admin client on ``node`` and a ``send(prices)`` that commits one batch through it."""
    admin = AdminClient(node.url, node.admin_key)

    def send(prices: list[dict[str, Any]]) -> None:
        admin.call("mutation", "marketData:applyUpdates", {"batch": {"prices": prices}})

    return admin, send


def window(fleet: Fleet, start_ms: float, end_ms: float) -> dict[str, Any]:
    """Pushes whose send stamp fell in [start_ms, end_ms): pushes/s delivered and latency."""
    lat = [lat for at, lat in fleet.samples if start_ms <= at - lat < end_ms]
    return {
        "pushes": len(lat),
        "pushes_per_s": round(len(lat) / ((end_ms - start_ms) / 1000), 1),
        **summarize_ms(lat),
    }


def publish_at(send: Any, markets: int, sockets: int, pushes_per_s: float, seconds: float) -> int:
    """Send price changes for ``seconds`` so that about ``pushes_per_s`` pushes go out."""
    per_market = sockets / markets
    updates_per_s = pushes_per_s / per_market
    per_batch = batch_size(updates_per_s, markets)
    return _publish(send, tickers(markets), updates_per_s / per_batch, per_batch, seconds)


def capacity(
    pg: str, nodes: int, clients: int, markets: int, steps: Sequence[float], seconds: float
) -> dict[str, Any]:
    """Step the push rate up against ``nodes`` nodes; the best step with p99 in the goal."""
    with cluster(pg, nodes, markets) as procs:
        admin, send = writer(procs[0])
        with admin, Fleet("raw", "", fleet_subs(procs, clients, markets, None)) as fleet:
            windows = []
            for target in steps:
                cpu_before = [cpu_seconds(p.pid) for p in procs]
                start_ms = time.time() * 1000
                sent = publish_at(send, markets, clients, target, seconds)
                end_ms = time.time() * 1000
                cpu = [cpu_seconds(p.pid) - b for p, b in zip(procs, cpu_before, strict=True)]
                wall_s = (end_ms - start_ms) / 1000
                windows.append((target, sent * clients / markets, start_ms, end_ms, cpu, wall_s))
                time.sleep(1.5)  # the tail drains before the next step
    runs = [
        {
            "target_pushes_per_s": t,
            # The writer commits one batch at a time, so a node slow to answer (its loop busy
            # fanning out) slows the sending too: sent/s is below target when a node saturates.
            "sent_pushes_per_s": round(pushes / wall_s, 1),
            "nodes_cpu_per_s": [round(c / wall_s, 2) for c in cpu],
            **window(fleet, s, e),
        }
        for t, pushes, s, e, cpu, wall_s in windows
    ]
    good = [r["pushes_per_s"] for r in runs if r["p99_ms"] <= GOAL_CAPACITY_P99_MS]
    return {
        "nodes": nodes,
        "capacity_pushes_per_s": max(good, default=0.0),
        "peak_pushes_per_s": max(r["pushes_per_s"] for r in runs),
        "dropped": fleet.dropped,
        "failed_queries": fleet.errors,
        "steps": runs,
    }


def connections(
    pg: str, sockets: int, markets: int, seconds: float, fd_limit: int, per_source: int
) -> dict[str, Any]:
    """``sockets`` across 4 nodes: memory per connection and latency at 3,000 pushes/s."""
    nodes = 4
    per_node = math.ceil(sockets / nodes)
    if per_node > fd_limit - FD_MARGIN:
        raise SystemExit(
            f"{sockets:,} connections need {per_node:,} per node, past this host's hard "
            f"RLIMIT_NOFILE of {fd_limit:,} per process (at most "
            f"{nodes * (fd_limit - FD_MARGIN):,} across {nodes} nodes)"
        )
    processes = max(2, math.ceil(sockets / (fd_limit - FD_MARGIN)))
    with cluster(pg, nodes, markets) as procs:
        admin, send = writer(procs[0])
        rss_before = sum(rss_kib(p.pid) for p in procs)
        subs = fleet_subs(procs, sockets, markets, per_source)
        connect_started = time.monotonic()
        with (
            admin,
            Fleet(
                "raw", "", subs, processes=processes, ready_timeout_s=180 + sockets / 100
            ) as fleet,
        ):
            connect_s = time.monotonic() - connect_started
            time.sleep(1.0)
            rss_after = sum(rss_kib(p.pid) for p in procs)
            start_ms = time.time() * 1000
            sent = publish_at(send, markets, sockets, CONNECTIONS_PUSHES_PER_S, seconds)
            end_ms = time.time() * 1000
            time.sleep(1.5)
    return {
        "connections": sockets,
        "nodes": nodes,
        "source_addresses": len({s for _, s, _, _ in subs}),
        "client_processes": processes,
        "connect_s": round(connect_s, 1),
        "nodes_rss_mib_before": round(rss_before / 1024, 1),
        "nodes_rss_mib_after": round(rss_after / 1024, 1),
        "kib_per_connection": round((rss_after - rss_before) / sockets, 2),
        "dropped": fleet.dropped,
        "failed_queries": fleet.errors,
        "sent_pushes_per_s": round(sent * sockets / markets / ((end_ms - start_ms) / 1000), 1),
        **window(fleet, start_ms, end_ms),
    }


def report_capacity(opts: argparse.Namespace) -> dict[str, Any]:
    """Part 1 for every node count of ``opts.nodes``: print the tables, return the figures."""
    runs = [
        capacity(opts.pg, n, opts.clients, opts.markets, opts.steps, opts.seconds)
        for n in opts.nodes
    ]
    base, peak_base = runs[0]["capacity_pushes_per_s"], runs[0]["peak_pushes_per_s"]
    for run in runs:
        run["vs_first"] = round(run["capacity_pushes_per_s"] / base, 2) if base else None
        run["peak_vs_first"] = round(run["peak_pushes_per_s"] / peak_base, 2) if peak_base else None
    rows = [
        [
            r["nodes"],
            f"{s['target_pushes_per_s']:g}",
            s["sent_pushes_per_s"],
            s["pushes_per_s"],
            *latency_cells(s),
            "yes" if s["p99_ms"] <= GOAL_CAPACITY_P99_MS else "no",
            " ".join(f"{c:.2f}" for c in s["nodes_cpu_per_s"]),
        ]
        for r in runs
        for s in r["steps"]
    ]
    print_table(
        f"fan-out steps: {opts.clients:,} getPrice sockets over {opts.markets} markets, spread "
        f"over the nodes; writer on node 1; {opts.seconds:g} s a step",
        [
            "nodes",
            "target/s",
            "sent/s",
            "delivered/s",
            *LATENCY_HEADERS,
            "p99 ok",
            "CPU/s per node",
        ],
        rows,
    )
    two = next((r for r in runs if r["nodes"] == 2), None)
    print_table(
        f"capacity: pushes/s delivered at p99 ≤ {GOAL_CAPACITY_P99_MS:g} ms "
        f"(baseline {runs[0]['nodes']} node(s), same run)",
        ["nodes", "capacity/s", "ratio", "goal", "peak delivered/s (any p99)", "ratio", "dropped"],
        [
            [
                r["nodes"],
                r["capacity_pushes_per_s"],
                f"x{r['vs_first']}",
                f"≥ x{GOAL_TWO_NODE_RATIO}" if r is two else "",
                r["peak_pushes_per_s"],
                f"x{r['peak_vs_first']}",
                r["dropped"],
            ]
            for r in runs
        ],
    )
    return {
        "capacity": runs,
        "two_node_ratio": two["vs_first"] if two else None,
        "two_node_peak_ratio": two["peak_vs_first"] if two else None,
        "two_node_goal": GOAL_TWO_NODE_RATIO,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000, help="fleet for the capacity runs")
    parser.add_argument("--markets", type=int, default=200)
    parser.add_argument(
        "--steps",
        type=float,
        nargs="*",
        default=[250, 500, 1000, 2000, 4000, 8000],
        help="target pushes/s, stepped up",
    )
    parser.add_argument("--nodes", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--connections", type=int, default=4000, help="0 skips part 2")
    parser.add_argument("--per-source", type=int, default=PER_SOURCE, help="sockets per address")
    parser.add_argument("--seconds", type=float, default=5.0, help="per step")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    if opts.quick:
        opts.clients, opts.markets, opts.steps = 100, 20, [200, 400]
        opts.nodes, opts.connections, opts.seconds = [1, 2], 200, 1.0
    fd_limit = raise_fd_limit()
    load_before = load_average()
    figures: dict[str, Any] = {
        "bench": "cluster_fanout",
        "fd_limit": fd_limit,
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
    }
    if opts.nodes:
        figures.update(report_capacity(opts))
    if opts.connections:
        conn = connections(
            opts.pg, opts.connections, opts.markets, opts.seconds, fd_limit, opts.per_source
        )
        figures["connections"] = conn
        print_table(
            f"{conn['connections']:,} subscribed sockets across {conn['nodes']} nodes from "
            f"{conn['source_addresses']} source addresses, ~{CONNECTIONS_PUSHES_PER_S:g} "
            "pushes/s",
            ["sent/s", "delivered/s", *LATENCY_HEADERS, "goal", "KiB/conn", "dropped"],
            [
                [
                    conn["sent_pushes_per_s"],
                    conn["pushes_per_s"],
                    *latency_cells(conn),
                    f"p99 ≤ {GOAL_CONNECTIONS_P99_MS:g} at {GOAL_CONNECTIONS:,}",
                    conn["kib_per_connection"],
                    conn["dropped"],
                ]
            ],
        )
    figures["load_average_after"] = load_average()
    print(
        f"host: {os.cpu_count()} cores, load average {load_before} before, "
        f"{figures['load_average_after']} after; RLIMIT_NOFILE {fd_limit:,} per process"
    )
    emit(figures)


if __name__ == "__main__":
    main()
