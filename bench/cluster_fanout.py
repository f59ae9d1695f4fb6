"""Fan-out across store nodes on one PostgreSQL database (issue 14): capacity with 1, 2 and 4
nodes, and 100,000 subscribed connections.

Every node is a real ``marketpulse serve --db postgresql://…`` on one database created for
the run (and dropped after). Subscribers are lean one-query sockets (``RawSubscriber``), each
holding a ``marketData:getPrice`` subscription, connected directly to the nodes (no balancer)
from spawned child processes and from several 127.0.0.x source addresses. One writer sends
stamped ``marketData:applyUpdates`` batches (at most 20 a second) over HTTP to the first node
only; the other nodes get them through the PostgreSQL log. Latency is the price's stamp (its
send time) → receipt by a subscriber.

1. Capacity: the same fleet (``--clients``) against 1, 2 and 4 nodes; the push rate steps up
   (``--steps``). What is measured is the nodes, so the rest costs as little as it can:
   - each market's subscribers are on one node (``--placement market``), so a commit makes
     work for one node only and each node's fan-out is independent of the others';
   - few markets (``--markets``), many subscribers each: a commit fans out to hundreds of
     sockets, so the writer and PostgreSQL handle one update per hundreds of pushes;
   - one socket in ``--sample-every`` parses and timestamps every push (the latency
     figures); the others count their pushes from frame headers, read in bulk a few times a
     second (far cheaper per push than the node's write).
   A step's "delivered/s" is the pushes the whole fleet received from the step's start to the
   next step's; capacity is the highest step delivered with p99 ≤ 100 ms; printed with the
   ratio to one node (goal: 2 nodes ≥ 1.6× one node), the peak delivered at any p99, and the
   CPU of every process in each step (each node, the fleet, the writer, our database's
   PostgreSQL backends) beside the whole host's, to show what is saturated.
2. Connections: ``--connections`` sockets (goal figure: 100,000) spread over the nodes as a
   balancer would, on 4 nodes, or more when 4 cannot hold them: a process holds at most its
   hard ``RLIMIT_NOFILE`` descriptors, so a node takes at most that minus
   :data:`FD_HEADROOM` sockets, and so does each fleet process. Memory per connection (the
   nodes' RSS before and after, divided), the time to connect, the CPU a connection cost, and
   latency at 3,000 pushes/s (goal: p99 ≤ 200 ms).

The subscribers, the writer, PostgreSQL and every node share this host's cores (and other
people's work): the load average is printed with the figures.

    python bench/cluster_fanout.py [--clients 4000] [--connections 4000] [--seconds 5] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

import asyncpg

from _clients import Fleet
from _common import FLEET_FLAGS, cpu_seconds, emit, print_table, rss_kib
from cluster import database
from fanout import _publish, batch_size, seed_markets, tickers
from marketpulse._process import ephemeral_ports
from marketpulse.reactive.admission import raise_fd_limit
from marketpulse.reactive.sync.client import LightSyncClient
from marketpulse.testing import AdminClient, StoreProcess, summarize_ms

GOAL_CAPACITY_P99_MS = 100.0
GOAL_TWO_NODE_RATIO = 1.6
GOAL_CONNECTIONS = 100_000
GOAL_CONNECTIONS_P99_MS = 200.0
CONNECTIONS_PUSHES_PER_S = 3000.0
MIN_CONNECTION_NODES = 4
PER_SOURCE = 10_000
"""Sockets per 127.0.0.x source address. A socket bound to (address, port 0) gets its port
from that address's half of ``ip_local_port_range`` (~14,000 ports with the default range;
Linux keeps the other half for ``connect()``); past it, every ``bind()`` searches the whole
range, 9-33 ms each here (30 µs below 12,000). That search, inside the fleet's event loop, is
what made 40,000 sockets take 310 s, and at 79,000 held sockets' handshakes past the node's
10 s head and Connect timeouts (408s, closed sockets)."""
FD_HEADROOM = 2_000
"""Descriptors a node or fleet process keeps besides its sockets (PostgreSQL, logs, the
listener, the admission's own reserve), so a node's socket budget is ``RLIMIT_NOFILE -
FD_HEADROOM``: 18,000 with this host's hard limit of 20,000."""
IDLE_S = 3.0
"""Part 2: how long the connected sockets are held with nothing pushed, before pushing."""
STEP_GAP_S = 1.5
"""Between steps: the tail of one step's pushes arrives before the next starts."""
SERVE_FLAGS = FLEET_FLAGS
LATENCY_HEADERS = ("p50 ms", "p99 ms", "p999 ms", "max ms")
SATURATED = 0.9
"""A process (or the host) using this share of its cores or more is taken as saturated."""


def latency_cells(figures: dict[str, Any]) -> list[float]:
    """The table cells under :data:`LATENCY_HEADERS`."""
    return [figures["p50_ms"], figures["p99_ms"], figures["p999_ms"], figures["max_ms"]]


def load_average() -> str:
    """The host's 1/5/15-minute load averages."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


@contextmanager
def cluster(pg: str, nodes: int, markets: int) -> Iterator[tuple[str, list[StoreProcess]]]:
    """``nodes`` serve processes on a fresh database (its URL is yielded with them),
    ``markets`` markets seeded at price 0.5."""
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
        yield url, procs


def fleet_subs(
    nodes: Sequence[StoreProcess],
    sockets: int,
    markets: int,
    per_source: int,
    placement: str = "spread",
    sample_every: int = 1,
) -> list[tuple[str, str, str, dict[str, Any], bool]]:
    """One getPrice socket per entry (ws url, source address, path, args, sampled).

    Markets go round-robin over the sockets. ``placement``: ``market`` puts each market's
    sockets on one node (market i on node i mod n); ``spread`` spreads every market's
    sockets over all the nodes, as a balancer would. Every ``sample_every``-th socket of a
    market is sampled. A new 127.0.0.x source address every ``per_source`` sockets.
    """
    names = tickers(markets)
    urls = [LightSyncClient.ws_url(n.url) for n in nodes]
    subs = []
    for i in range(sockets):
        market, rank = i % markets, i // markets
        node = market % len(urls) if placement == "market" else rank % len(urls)
        subs.append(
            (
                urls[node],
                f"127.0.0.{2 + i // per_source}",
                "marketData:getPrice",
                {"ticker": names[market]},
                rank % sample_every == 0,
            )
        )
    return subs


def writer(node: StoreProcess) -> tuple[AdminClient, Any]:
    """An admin client on ``node`` and a ``send(prices)`` that commits one batch through it."""
    admin = AdminClient(node.url, node.admin_key)

    def send(prices: list[dict[str, Any]]) -> None:
        admin.call("mutation", "marketData:applyUpdates", {"batch": {"prices": prices}})

    return admin, send


def latency_window(fleet: Fleet, start_ms: float, end_ms: float) -> dict[str, Any]:
    """Latency of the sampled pushes whose send stamp fell in [start_ms, end_ms)."""
    lat = [lat for at, lat in fleet.samples if start_ms <= at - lat < end_ms]
    return {"pushes": len(lat), **summarize_ms(lat)}


def delivered(fleet: Fleet, start_ms: float, end_ms: float) -> int:
    """Pushes the whole fleet received in [start_ms, end_ms): the sampled sockets' and the
    draining sockets' counts."""
    sampled = sum(1 for at, _ in fleet.samples if start_ms <= at < end_ms)
    return sampled + sum(n for at, n in fleet.received if start_ms <= at < end_ms)


def publish_at(send: Any, markets: int, sockets: int, pushes_per_s: float, seconds: float) -> int:
    """Send price changes for ``seconds`` so that about ``pushes_per_s`` pushes go out."""
    per_market = sockets / markets
    updates_per_s = pushes_per_s / per_market
    per_batch = batch_size(updates_per_s, markets)
    return _publish(send, tickers(markets), updates_per_s / per_batch, per_batch, seconds)


# -- CPU of every process, and of the host ----------------------------------------------------


def host_busy_s() -> float:
    """CPU seconds the whole host has spent busy (all cores, all users) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    with contextlib.suppress(OSError):
        return cpu_seconds(pid)
    return 0.0  # gone (a PostgreSQL backend that closed)


async def _backends(db_url: str) -> list[int]:
    server, name = db_url.rsplit("/", 1)
    conn = await asyncpg.connect(f"{server}/postgres")
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await conn.close()
    return [int(r["pid"]) for r in rows]


class CpuWatch:
    """CPU seconds of the nodes, the fleet's processes, the writer (this process), the
    PostgreSQL backends serving the run's database, and the whole host."""

    def __init__(self, db_url: str, nodes: Sequence[StoreProcess], fleet: Fleet) -> None:
        self._db_url = db_url
        self._nodes = [n.pid for n in nodes]
        self._fleet = fleet.pids
        self._backends: list[int] = []

    def snapshot(self) -> dict[str, Any]:
        """Cumulative CPU seconds now (and the monotonic time)."""
        self._backends = asyncio.run(_backends(self._db_url))
        return {
            "at": time.monotonic(),
            "nodes": [_cpu(p) for p in self._nodes],
            "fleet": sum(_cpu(p) for p in self._fleet),
            "writer": _cpu(os.getpid()),
            "postgres": {p: _cpu(p) for p in self._backends},
            "host": host_busy_s(),
        }

    @staticmethod
    def per_s(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        """Cores used between two snapshots, by process group."""
        wall = after["at"] - before["at"]
        pg = sum(after["postgres"].get(p, c) - c for p, c in before["postgres"].items())
        nodes = [(a - b) / wall for a, b in zip(after["nodes"], before["nodes"], strict=True)]
        out = {
            "nodes": [round(n, 2) for n in nodes],
            "fleet": round((after["fleet"] - before["fleet"]) / wall, 2),
            "writer": round((after["writer"] - before["writer"]) / wall, 2),
            "postgres": round(pg / wall, 2),
            "host": round((after["host"] - before["host"]) / wall, 2),
        }
        ours = sum(nodes) + out["fleet"] + out["writer"] + out["postgres"]
        out["ours"] = round(ours, 2)
        out["others"] = round(max(0.0, out["host"] - ours), 2)
        return out


def saturated(cpu: dict[str, Any], cores: int) -> str:
    """What the CPU figures of one step say is the bound."""
    busiest = max(cpu["nodes"])
    if busiest >= SATURATED:
        return f"a node ({busiest:.2f} core)"
    if cpu["host"] >= SATURATED * cores:
        return f"the host ({cpu['host']:.2f} of {cores} cores; others {cpu['others']:.2f})"
    if cpu["fleet"] >= SATURATED:
        return f"the fleet ({cpu['fleet']:.2f} core)"
    return "none by CPU (latency under a loaded scheduler)"


# -- 1. capacity -------------------------------------------------------------------------------


def capacity(opts: argparse.Namespace, nodes: int) -> dict[str, Any]:
    """Step the push rate up against ``nodes`` nodes; the best step with p99 in the goal."""
    with cluster(opts.pg, nodes, opts.markets) as (db_url, procs):
        admin, send = writer(procs[0])
        subs = fleet_subs(
            procs, opts.clients, opts.markets, opts.per_source, opts.placement, opts.sample_every
        )
        with admin, Fleet("raw", "", subs) as fleet:
            watch = CpuWatch(db_url, procs, fleet)
            windows = []
            for target in opts.steps:
                before = watch.snapshot()
                start_ms = time.time() * 1000
                sent = publish_at(send, opts.markets, opts.clients, target, opts.seconds)
                end_ms = time.time() * 1000
                cpu = CpuWatch.per_s(before, watch.snapshot())
                time.sleep(STEP_GAP_S)
                next_ms = time.time() * 1000
                windows.append(
                    (target, sent * opts.clients / opts.markets, start_ms, end_ms, next_ms, cpu)
                )
    runs = []
    for target, pushes, start_ms, end_ms, next_ms, cpu in windows:
        wall_s = (end_ms - start_ms) / 1000
        runs.append(
            {
                "target_pushes_per_s": target,
                # The writer commits one batch at a time, so a node slow to answer (its loop
                # busy fanning out) slows the sending too: sent/s is below target then.
                "sent_pushes_per_s": round(pushes / wall_s, 1),
                "pushes_per_s": round(delivered(fleet, start_ms, next_ms) / wall_s, 1),
                **latency_window(fleet, start_ms, end_ms),
                "cpu": cpu,
                "bound": saturated(cpu, os.cpu_count() or 1),
            }
        )
    good = [r["pushes_per_s"] for r in runs if r["p99_ms"] <= GOAL_CAPACITY_P99_MS]
    peak = max(runs, key=lambda r: r["pushes_per_s"])
    kept_up = peak["sent_pushes_per_s"] >= 0.95 * peak["target_pushes_per_s"]
    if peak is runs[-1] and peak["p99_ms"] <= GOAL_CAPACITY_P99_MS and kept_up:
        peak["bound"] = "not reached: the top step met the goal (raise --steps)"
    per_push = 1e6 / peak["pushes_per_s"] if peak["pushes_per_s"] else 0.0
    return {
        "nodes": nodes,
        "capacity_pushes_per_s": max(good, default=0.0),
        "peak_pushes_per_s": peak["pushes_per_s"],
        "peak_cpu": peak["cpu"],
        "peak_bound": peak["bound"],
        # What a push costs each side, at the peak: the fleet must cost far less than a node.
        "node_cpu_us_per_push": round(sum(peak["cpu"]["nodes"]) * per_push, 1),
        "fleet_cpu_us_per_push": round(peak["cpu"]["fleet"] * per_push, 1),
        "dropped": fleet.dropped,
        "failed_queries": fleet.errors,
        "failed_sockets": fleet.failures,
        "steps": runs,
    }


def report_capacity(opts: argparse.Namespace) -> dict[str, Any]:
    """Part 1 for every node count of ``opts.nodes``: print the tables, return the figures."""
    runs = [capacity(opts, n) for n in opts.nodes]
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
            " ".join(f"{c:.2f}" for c in s["cpu"]["nodes"]),
            f"{s['cpu']['fleet']:.2f}",
            f"{s['cpu']['writer']:.2f}",
            f"{s['cpu']['postgres']:.2f}",
            f"{s['cpu']['host']:.2f} ({s['cpu']['others']:.2f})",
        ]
        for r in runs
        for s in r["steps"]
    ]
    print_table(
        f"fan-out steps: {opts.clients:,} getPrice sockets over {opts.markets} markets "
        f"({opts.placement} placement, 1 in {opts.sample_every} timed), writer on node 1; "
        f"{opts.seconds:g} s a step; CPU in cores",
        [
            "nodes",
            "target/s",
            "sent/s",
            "delivered/s",
            *LATENCY_HEADERS,
            "p99 ok",
            "per node",
            "fleet",
            "writer",
            "pg",
            "host (others)",
        ],
        rows,
    )
    two = next((r for r in runs if r["nodes"] == 2), None)
    print_table(
        f"capacity: pushes/s delivered at p99 ≤ {GOAL_CAPACITY_P99_MS:g} ms "
        f"(baseline {runs[0]['nodes']} node(s), same run)",
        [
            "nodes",
            "capacity/s",
            "ratio",
            "goal",
            "peak delivered/s (any p99)",
            "ratio",
            "CPU µs/push: nodes, fleet",
            "bound at the peak",
            "dropped",
        ],
        [
            [
                r["nodes"],
                r["capacity_pushes_per_s"],
                f"x{r['vs_first']}",
                f"≥ x{GOAL_TWO_NODE_RATIO}" if r is two else "",
                r["peak_pushes_per_s"],
                f"x{r['peak_vs_first']}",
                f"{r['node_cpu_us_per_push']:g}, {r['fleet_cpu_us_per_push']:g}",
                r["peak_bound"],
                r["dropped"] + sum(r["failed_sockets"].values()),
            ]
            for r in runs
        ],
    )
    if any(r["peak_bound"].startswith("the host") for r in runs):
        print(
            "note: the host's cores were all busy at the peak (with other work, 'others'): no "
            "node was saturated, each got the share the scheduler gave it, and more node "
            "processes get more share, so the ratios measure that share as much as the nodes.",
            flush=True,
        )
    return {
        "capacity": runs,
        "two_node_ratio": two["vs_first"] if two else None,
        "two_node_peak_ratio": two["peak_vs_first"] if two else None,
        "two_node_goal": GOAL_TWO_NODE_RATIO,
    }


# -- 2. connections ----------------------------------------------------------------------------


def connection_layout(sockets: int, fd_limit: int, nodes: int) -> tuple[int, int, str]:
    """(nodes, fleet processes, why that many nodes) for ``sockets`` connections.

    ``nodes`` 0: :data:`MIN_CONNECTION_NODES`, or as many as the descriptor limit needs.
    """
    budget = fd_limit - FD_HEADROOM
    if budget <= 0:
        raise SystemExit(f"RLIMIT_NOFILE {fd_limit:,} leaves no sockets past {FD_HEADROOM:,}")
    needed = math.ceil(sockets / budget)
    processes = max(2, needed)
    if nodes:
        if needed > nodes:
            raise SystemExit(
                f"{sockets:,} connections on {nodes} nodes need {math.ceil(sockets / nodes):,} "
                f"per node, past {budget:,} (RLIMIT_NOFILE {fd_limit:,} - {FD_HEADROOM:,})"
            )
        return nodes, processes, f"{nodes} nodes (--connection-nodes)"
    if needed <= MIN_CONNECTION_NODES:
        return MIN_CONNECTION_NODES, processes, f"{MIN_CONNECTION_NODES} nodes"
    return (
        needed,
        processes,
        f"{needed} nodes: {MIN_CONNECTION_NODES} cannot hold {sockets:,} sockets, as this "
        f"host's hard RLIMIT_NOFILE is {fd_limit:,} per process (read at start; raising it "
        f"needs CAP_SYS_RESOURCE), which leaves {budget:,} sockets per node: "
        f"ceil({sockets:,} / {budget:,}) = {needed}",
    )


def connections(opts: argparse.Namespace, fd_limit: int) -> dict[str, Any]:
    """``opts.connections`` sockets across the nodes: memory and CPU per connection, and
    latency at 3,000 pushes/s."""
    sockets, markets = opts.connections, opts.connection_markets
    nodes, processes, why = connection_layout(sockets, fd_limit, opts.connection_nodes)
    print(f"connections: {sockets:,} sockets on {why}; {processes} fleet processes", flush=True)
    load_before = load_average()
    with cluster(opts.pg, nodes, markets) as (_, procs):
        admin, send = writer(procs[0])
        rss_before = sum(rss_kib(p.pid) for p in procs)
        cpu_before = sum(cpu_seconds(p.pid) for p in procs)
        subs = fleet_subs(procs, sockets, markets, opts.per_source)
        connect_started = time.monotonic()
        with (
            admin,
            Fleet(
                "raw", "", subs, processes=processes, ready_timeout_s=120 + sockets * 0.003
            ) as fleet,
        ):
            connect_s = time.monotonic() - connect_started
            cpu_connected = sum(cpu_seconds(p.pid) for p in procs)
            nodes_cpu_s = cpu_connected - cpu_before
            time.sleep(IDLE_S)
            # What holding the sockets costs with nothing pushed (timers, pings, the log's
            # follower), then what the pushes cost on top.
            cpu_idle = sum(cpu_seconds(p.pid) for p in procs)
            rss_after = sum(rss_kib(p.pid) for p in procs)
            start_ms = time.time() * 1000
            sent = publish_at(send, markets, sockets, CONNECTIONS_PUSHES_PER_S, opts.seconds)
            end_ms = time.time() * 1000
            cpu_measured = sum(cpu_seconds(p.pid) for p in procs)
            time.sleep(STEP_GAP_S)
    failed = sum(fleet.failures.values())
    return {
        "connections": sockets,
        "subscribed": sockets - failed,
        "nodes": nodes,
        "nodes_why": why,
        "source_addresses": len({s for _, s, *_ in subs}),
        "client_processes": processes,
        "connect_s": round(connect_s, 1),
        "connections_per_s": round(sockets / connect_s, 1),
        "fleet_connect_s": round(fleet.connect_s, 1),
        "node_cpu_ms_per_connection": round(nodes_cpu_s / sockets * 1000, 3),
        "fleet_cpu_ms_per_connection": round(fleet.connect_cpu_s / sockets * 1000, 3),
        "nodes_idle_cores": round((cpu_idle - cpu_connected) / IDLE_S, 2),
        "nodes_cores_at_3000": round((cpu_measured - cpu_idle) / ((end_ms - start_ms) / 1000), 2),
        "nodes_rss_mib_before": round(rss_before / 1024, 1),
        "nodes_rss_mib_after": round(rss_after / 1024, 1),
        "kib_per_connection": round((rss_after - rss_before) / sockets, 2),
        "dropped": fleet.dropped,
        "failed_queries": fleet.errors,
        "failed_sockets": fleet.failures,
        "sent_pushes_per_s": round(sent * sockets / markets / ((end_ms - start_ms) / 1000), 1),
        "pushes_per_s": round(delivered(fleet, start_ms, end_ms) / ((end_ms - start_ms) / 1000), 1),
        **latency_window(fleet, start_ms, end_ms),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def report_connections(opts: argparse.Namespace, fd_limit: int) -> dict[str, Any]:
    """Part 2: print its tables, return the figures."""
    conn = connections(opts, fd_limit)
    print_table(
        f"connecting {conn['connections']:,} sockets to {conn['nodes']} nodes from "
        f"{conn['source_addresses']} source addresses, {conn['client_processes']} fleet processes",
        [
            "connect s",
            "conn/s",
            "node CPU ms/conn",
            "fleet CPU ms/conn",
            "KiB/conn",
            "nodes idle cores",
            "nodes cores at 3,000/s",
            "failed",
        ],
        [
            [
                conn["connect_s"],
                conn["connections_per_s"],
                conn["node_cpu_ms_per_connection"],
                conn["fleet_cpu_ms_per_connection"],
                conn["kib_per_connection"],
                conn["nodes_idle_cores"],
                conn["nodes_cores_at_3000"],
                ", ".join(f"{k}: {v}" for k, v in conn["failed_sockets"].items()) or "0",
            ]
        ],
    )
    print_table(
        f"{conn['subscribed']:,} subscribed sockets on {conn['nodes']} nodes, "
        f"~{CONNECTIONS_PUSHES_PER_S:g} pushes/s (load average {conn['load_average_before']} "
        f"before, {conn['load_average_after']} after)",
        ["sent/s", "delivered/s", *LATENCY_HEADERS, "goal", "dropped"],
        [
            [
                conn["sent_pushes_per_s"],
                conn["pushes_per_s"],
                *latency_cells(conn),
                f"p99 ≤ {GOAL_CONNECTIONS_P99_MS:g} at {GOAL_CONNECTIONS:,}",
                conn["dropped"],
            ]
        ],
    )
    return conn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4000, help="fleet for the capacity runs")
    parser.add_argument("--markets", type=int, default=20, help="markets of the capacity runs")
    parser.add_argument(
        "--steps",
        type=float,
        nargs="*",
        default=[8000, 16000, 32000, 48000, 64000],
        help="target pushes/s, stepped up",
    )
    parser.add_argument("--nodes", type=int, nargs="*", default=[1, 2, 4], help="capacity runs")
    parser.add_argument(
        "--placement",
        choices=["market", "spread"],
        default="market",
        help="capacity: each market's sockets on one node, or every market over every node",
    )
    parser.add_argument(
        "--sample-every", type=int, default=10, help="capacity: 1 socket in N times pushes"
    )
    parser.add_argument("--connections", type=int, default=4000, help="0 skips part 2")
    parser.add_argument(
        "--connection-nodes",
        type=int,
        default=0,
        help=f"nodes for part 2 (0: {MIN_CONNECTION_NODES}, or more if the fd limit needs)",
    )
    parser.add_argument("--connection-markets", type=int, default=200)
    parser.add_argument("--per-source", type=int, default=PER_SOURCE, help="sockets per address")
    parser.add_argument("--seconds", type=float, default=5.0, help="per step")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    if opts.quick:
        opts.clients, opts.markets, opts.steps = 200, 10, [200, 400]
        opts.nodes, opts.connections, opts.seconds = [1, 2], 200, 1.0
    low, high = ephemeral_ports()
    if opts.per_source > (high - low + 1) // 2:
        print(
            f"warning: --per-source {opts.per_source:,} is past half of ip_local_port_range "
            f"{low}-{high}: binds will search the whole range (slow)",
            flush=True,
        )
    fd_limit = raise_fd_limit()
    load_before = load_average()
    figures: dict[str, Any] = {
        "bench": "cluster_fanout",
        "fd_limit": fd_limit,
        "cpus": os.cpu_count(),
        "ip_local_port_range": [low, high],
        "load_average_before": load_before,
    }
    if opts.nodes:
        figures.update(report_capacity(opts))
    if opts.connections:
        figures["connections"] = report_connections(opts, fd_limit)
    figures["load_average_after"] = load_average()
    print(
        f"host: {os.cpu_count()} cores, load average {load_before} before, "
        f"{figures['load_average_after']} after; RLIMIT_NOFILE {fd_limit:,} per process"
    )
    emit(figures)


if __name__ == "__main__":
    main()
