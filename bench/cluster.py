"""Store nodes on PostgreSQL (first version): cross-node receipt and the write path, beside a
single SQLite node measured in the same run.

A paced stream of ``bench:stamp`` mutations (``--rate`` per second, default 200: the
pipeline's mutation rate at 1,000 msg/s, which it writes in batches of ~5) is sent over one
sync WebSocket to node A; subscribers of ``bench:latest`` on node A and on node B record when
each sequence number reaches them. Printed, each with p50/p99/p999/max:

* commit → receipt on node B (another node) vs on node A (the node that committed), and the
  difference (goal: cross-node adds ≤ 2 ms at p50);
* the write path (send → MutationResponse) on PostgreSQL vs on one SQLite node at the same rate
  (goal: p50 ≤ 1.5× SQLite's), and receipt on the SQLite node as the single-node baseline.

* failover: three nodes behind HAProxy (deploy/haproxy's template); the official npm client
  (tests/js/driver.mjs) subscribes through the balancer, pinned to the node about to die, while a
  writer stamps ``bench:stamp`` 20 times a second on a surviving node. From the victim's SIGKILL
  to the client's first value stamped after the kill, over ``--kills`` kills (goal: p50 ≤ 3 s),
  beside the same client's send → receipt before each kill (its normal push latency).

One connection's mutations run one after another, so ``--rate 1000`` (one mutation per message)
is past what one connection can commit on PostgreSQL (a round trip of ~2 ms): the queue grows
and the figures show it.

Needs a PostgreSQL server (``--pg``, default ``postgresql://postgres@127.0.0.1:5432``); a
database is created for the run and dropped after.

    python bench/cluster.py [--seconds 10] [--rate 1000] [--kills 5] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import asyncpg

from _common import BENCH, emit, print_table
from e2e.js_driver import JsDriver  # the official npm client, as the e2e tests drive it
from marketpulse.reactive.sync.client import LightSyncClient
from marketpulse.testing import AdminClient, BalancerProcess, StoreProcess, summarize_ms

GOAL_CROSS_NODE_MS = 2.0
GOAL_WRITE_RATIO = 1.5
GOAL_FAILOVER_P50_S = 3.0
STAMP_INTERVAL_S = 0.05
NODES = ("a", "b", "c")


async def _admin(server: str, sql: str) -> None:
    conn = await asyncpg.connect(f"{server}/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def database(server: str) -> Iterator[str]:
    name = f"mp_bench_{secrets.token_hex(4)}"
    asyncio.run(_admin(server, f"CREATE DATABASE {name}"))
    try:
        yield f"{server}/{name}"
    finally:
        asyncio.run(_admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


async def _client(store: StoreProcess) -> LightSyncClient:
    client = await LightSyncClient(
        LightSyncClient.ws_url(store.url), keep_transitions=False
    ).connect()
    await client.authenticate("Admin", store.admin_key)
    return client


async def stream(
    writer_node: StoreProcess, watched: dict[str, StoreProcess], seconds: float, rate: float
) -> dict[str, list[float]]:
    """Send ``bench:stamp`` at ``rate``/s to ``writer_node`` for ``seconds``; return the write
    round trips and, per watched node, send → receipt (ms)."""
    writer = await _client(writer_node)
    watchers = {name: await _client(node) for name, node in watched.items()}
    qids = {name: await c.subscribe("bench:latest", {}) for name, c in watchers.items()}
    for name, c in watchers.items():
        await c.wait_for(qids[name])
    # Warm up (connections, caches), then start from a known sequence number.
    for seq in range(1, 51):
        await writer.request("Mutation", "bench:stamp", {"seq": seq})
    first = 51
    total = int(seconds * rate)
    sent: dict[int, float] = {}
    samples: dict[str, list[float]] = {"write": [], **{name: [] for name in watched}}

    async def watch(name: str) -> None:
        c, want = watchers[name], first
        while want < first + total:
            value = await c.wait_for(
                qids[name], lambda v, w=want: v is not None and v["seq"] >= w, timeout=30
            )
            now = time.perf_counter()
            for seq in range(want, int(value["seq"]) + 1):
                samples[name].append((now - sent[seq]) * 1000)
            want = int(value["seq"]) + 1

    async def send(seq: int) -> None:
        sent[seq] = start = time.perf_counter()
        response = await writer.request("Mutation", "bench:stamp", {"seq": seq})
        if not response.get("success"):
            raise RuntimeError(str(response))
        samples["write"].append((time.perf_counter() - start) * 1000)

    watching = [asyncio.create_task(watch(name)) for name in watched]
    sending = []
    origin = time.perf_counter()
    for i in range(total):
        delay = origin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sending.append(asyncio.create_task(send(first + i)))
    await asyncio.gather(*sending, *watching)
    for c in [writer, *watchers.values()]:
        await c.close()
    return samples


def node(database_url: str, log: Path) -> StoreProcess:
    return StoreProcess(
        database_url, functions="sync_latency_app", pythonpath=[BENCH], log_path=log
    )


def run(server: str, seconds: float, rate: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        folder = Path(tmp)
        with StoreProcess(
            folder / "single.sqlite", functions="sync_latency_app", pythonpath=[BENCH]
        ) as single:
            sqlite = asyncio.run(stream(single, {"same node": single}, seconds, rate))
        with (
            database(server) as url,
            node(url, folder / "a.log") as a,
            node(url, folder / "b.log") as b,
        ):
            pg = asyncio.run(stream(a, {"node A": a, "node B": b}, seconds, rate))
    figures = {
        "sqlite_write": summarize_ms(sqlite["write"]),
        "sqlite_receipt": summarize_ms(sqlite["same node"]),
        "pg_write": summarize_ms(pg["write"]),
        "pg_receipt_same_node": summarize_ms(pg["node A"]),
        "pg_receipt_other_node": summarize_ms(pg["node B"]),
    }
    return figures


class Stamper:
    """Stamps ``bench:stamp`` every ``STAMP_INTERVAL_S`` on one node (HTTP), in a thread;
    remembers when each sequence number was sent."""

    def __init__(self, node: StoreProcess) -> None:
        self.node = node
        self.sent: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with AdminClient(self.node.url, self.node.admin_key, timeout=10) as admin:
            seq = 0
            while not self.stop.is_set():
                seq += 1
                self.sent[seq] = time.perf_counter()
                admin.mutation("bench:stamp", {"seq": seq})
                time.sleep(STAMP_INTERVAL_S)

    def __enter__(self) -> Stamper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def _updates(js: JsDriver, until: float) -> list[tuple[float, int]]:
    """(receipt time, seq) of the subscription's updates until ``until`` (perf_counter)."""
    out = []
    while (left := until - time.perf_counter()) > 0:
        try:
            event = js.events.get(timeout=left)
        except Exception:  # queue.Empty: nothing more before ``until``
            break
        if event.get("event") == "update" and event.get("value"):
            out.append((time.perf_counter(), int(event["value"]["seq"])))
    return out


def failover(server: str, kills: int, folder: Path) -> dict[str, list[float]]:
    """SIGKILL the node an npm subscriber is on, ``kills`` times; return the kill → next fresh
    value times and the normal push latencies (send → receipt) before each kill (ms)."""
    out: dict[str, list[float]] = {"failover": [], "push": []}
    with database(server) as url:
        nodes = {n: node(f"{url}?node={n}", folder / f"fo-{n}.log") for n in NODES}
        for n in nodes.values():
            n.start()
        balancer = BalancerProcess([(n, p.port) for n, p in nodes.items()], folder / "lb")
        try:
            balancer.start()
            for k in range(kills):
                victim, writer = NODES[k % 3], NODES[(k + 1) % 3]
                for n in NODES:
                    balancer.set_state(n, "ready" if n == victim else "maint")
                js = JsDriver(balancer.url)
                try:
                    js.send(cmd="subscribe", id="s", path="bench:latest", args={})
                    for n in NODES:
                        balancer.set_state(n, "ready")
                    with Stamper(nodes[writer]) as stamper:
                        # Normal pushes first: the baseline, from the same client.
                        for at, seq in _updates(js, time.perf_counter() + 2.0):
                            if seq in stamper.sent:
                                out["push"].append((at - stamper.sent[seq]) * 1000)
                        last = max(stamper.sent)
                        killed = time.perf_counter()
                        nodes[victim].kill()
                        deadline = killed + 60
                        while time.perf_counter() < deadline:
                            fresh = [at for at, seq in _updates(js, deadline) if seq > last]
                            if fresh:
                                out["failover"].append((fresh[0] - killed) * 1000)
                                break
                        else:
                            raise RuntimeError(f"no fresh value 60 s after killing node {victim}")
                finally:
                    js.close()
                nodes[victim].start()  # same port; HAProxy takes it back after `rise` checks
                deadline = time.monotonic() + 30
                while balancer.servers()[victim].status != "UP":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"node {victim} not back in the balancer")
                    time.sleep(0.1)
        finally:
            balancer.stop()
            for n in nodes.values():
                n.stop()
    return out


def _row(label: str, f: dict[str, float], goal: str = "") -> list[Any]:
    return [label, f["p50_ms"], f["p99_ms"], f["p999_ms"], f["max_ms"], goal]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--kills", type=int, default=5, help="failover: nodes SIGKILLed")
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    seconds = 2.0 if opts.quick else opts.seconds
    kills = 3 if opts.quick else opts.kills
    f = run(opts.pg, seconds, opts.rate)
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        fo = failover(opts.pg, kills, Path(tmp))
    f["failover"] = summarize_ms(fo["failover"])
    f["failover_baseline_push"] = summarize_ms(fo["push"])
    cross = round(f["pg_receipt_other_node"]["p50_ms"] - f["pg_receipt_same_node"]["p50_ms"], 3)
    ratio = round(f["pg_write"]["p50_ms"] / f["sqlite_write"]["p50_ms"], 2)
    headers = ["", "p50 ms", "p99 ms", "p999 ms", "max ms", "goal"]
    print_table(
        f"commit → receipt, bench:stamp at {opts.rate:g}/s for {seconds:g}s",
        headers,
        [
            _row("PostgreSQL, node B (other)", f["pg_receipt_other_node"]),
            _row("PostgreSQL, node A (same)", f["pg_receipt_same_node"]),
            _row("SQLite, one node (baseline)", f["sqlite_receipt"]),
        ],
    )
    print(f"cross-node adds {cross} ms at p50 (goal ≤ {GOAL_CROSS_NODE_MS} ms)")
    print_table(
        "write path: send → MutationResponse, same rate",
        headers,
        [
            _row("PostgreSQL node", f["pg_write"]),
            _row("SQLite node (baseline)", f["sqlite_write"]),
        ],
    )
    print(f"PostgreSQL / SQLite p50: x{ratio} (goal ≤ x{GOAL_WRITE_RATIO})")
    print_table(
        f"failover through HAProxy, npm client, {kills} SIGKILLs",
        headers,
        [
            _row("SIGKILL → next fresh value", f["failover"], f"p50 ≤ {GOAL_FAILOVER_P50_S:g} s"),
            _row("send → receipt before the kill (baseline)", f["failover_baseline_push"]),
        ],
    )
    met = f["failover"]["p50_ms"] <= GOAL_FAILOVER_P50_S * 1000
    print(f"failover p50 {f['failover']['p50_ms'] / 1000:.2f} s: goal {'met' if met else 'missed'}")
    emit(
        {
            "bench": "cluster",
            "rate": opts.rate,
            "seconds": seconds,
            **f,
            "cross_node_p50_ms": cross,
            "pg_vs_sqlite_write_p50": ratio,
            "kills": kills,
        }
    )


if __name__ == "__main__":
    main()
