"""Store nodes on PostgreSQL: cross-node receipt and the write path, beside a single SQLite
node measured in the same run (and, with ``--before SRC``, the same PostgreSQL runs on another
checkout's code, e.g. ``main`` before group commit).

For each rate in ``--rates`` (default ``200,1000``), a paced stream of ``bench:stamp`` mutations
is sent over one sync WebSocket to node A; subscribers of ``bench:latest`` on node A and on node
B record when each sequence number reaches them. 200/s is the pipeline's mutation rate at 1,000
msg/s end to end (the worker writes one coalesced batch of ~5 updates at a time); 1,000/s is one
mutation per message on one connection. The SQLite node and the PostgreSQL nodes are started
once and measured in ``--rounds`` interleaved rounds (SQLite, PostgreSQL, SQLite, ...; each
``--seconds`` long), so that whatever else the machine does weighs on both alike; each round is
printed as it ends. Printed over all rounds, each with p50/p99/p999/max:

* commit → receipt on node B (another node) vs on node A (the node that committed), and the
  difference (goal: cross-node adds ≤ 2 ms at p50; the median of the rounds' differences);
* the write path (send → MutationResponse) on PostgreSQL vs on one SQLite node at the same rate
  (goal: p50 ≤ 1.5× SQLite's: the median of the rounds' ratios), with receipt on the SQLite node
  as the single-node baseline, and the load average at each round's start;
* mutations per PostgreSQL commit (the engine groups what is queued while a commit is on its
  way into one commit: one round trip).

One connection's mutations are pipelined by the store (each runs while the durable writes of
those before it are in flight; before that change, and with ``--before`` on older code, each was
durable before the next started): a rate past what the store sustains makes the queue grow,
and the figures show it ("fell behind" when the server closed the socket at its queue bound).

Then the write path back to back (``--calls`` per store): one connection per store, in
alternating blocks, so that a loaded machine weighs on each alike (the service time of one
connection's mutations, without the queue a paced rate builds when it is past it).

Then, in process, where one group's time goes (``--groups``): encoding, then the round trip of
``mp_commit_group``, beside the same connection's ``SELECT 1`` (the network and protocol floor)
and the group with ``synchronous_commit = off`` (the rest is the WAL flush).

Needs a PostgreSQL server (``--pg``, default ``postgresql://postgres@127.0.0.1:5432``); a
database is created for each run and dropped after.

    python bench/cluster.py [--seconds 4] [--rounds 5] [--rates 200,1000] [--before ../main/src] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg

from _common import BENCH, emit, print_table
from marketpulse.reactive.persistence import Commit, DocumentWrite
from marketpulse.reactive.persistence.postgres import _COMMIT_GROUP, PostgresPersistence
from marketpulse.reactive.sync.client import LightSyncClient, ServerError
from marketpulse.testing import StoreProcess, summarize_ms

GOAL_CROSS_NODE_MS = 2.0
GOAL_WRITE_RATIO = 1.5
WARM_UP = 50


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


@dataclass
class Run:
    """One stream's samples (ms) per measure, and why it stopped early (if it did)."""

    samples: dict[str, list[float]]
    fell_behind: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def stream(
    writer_node: StoreProcess,
    watched: dict[str, StoreProcess],
    seconds: float,
    rate: float,
    base: int = 0,
) -> Run:
    """Send ``bench:stamp`` at ``rate``/s to ``writer_node`` for ``seconds``; the write round
    trips and, per watched node, send → receipt (ms). Sequence numbers start after ``base``
    (the store's ``bench:latest`` must be below it: a later round continues an earlier one's
    numbers); the last one sent is ``run.extra["last_seq"]``."""
    writer = await _client(writer_node)
    watchers = {name: await _client(node) for name, node in watched.items()}
    qids = {name: await c.subscribe("bench:latest", {}) for name, c in watchers.items()}
    for name, c in watchers.items():
        await c.wait_for(qids[name])
    # Warm up (connections, caches), then start from a known sequence number.
    for seq in range(base + 1, base + WARM_UP + 1):
        await writer.request("Mutation", "bench:stamp", {"seq": seq})
    first = base + WARM_UP + 1
    total = int(seconds * rate)
    sent: dict[int, float] = {}
    run = Run({"write": [], **{name: [] for name in watched}})
    run.extra["last_seq"] = first + total - 1

    async def watch(name: str) -> None:
        c, want = watchers[name], first
        while want < first + total:
            value = await c.wait_for(
                qids[name], lambda v, w=want: v is not None and v["seq"] >= w, timeout=60
            )
            now = time.perf_counter()
            for seq in range(want, int(value["seq"]) + 1):
                run.samples[name].append((now - sent[seq]) * 1000)
            want = int(value["seq"]) + 1

    async def send(seq: int) -> None:
        sent[seq] = start = time.perf_counter()
        response = await writer.request("Mutation", "bench:stamp", {"seq": seq})
        if not response.get("success"):
            raise RuntimeError(str(response))
        run.samples["write"].append((time.perf_counter() - start) * 1000)
        last_ack[0] = time.perf_counter()

    watching = [asyncio.create_task(watch(name)) for name in watched]
    sending = []
    origin = time.perf_counter()
    last_ack = [origin]
    for i in range(total):
        delay = origin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if any(t.done() and t.exception() for t in sending[-50:]):
            break
        sending.append(asyncio.create_task(send(first + i)))
    outcomes = await asyncio.gather(*sending, return_exceptions=True)
    # What this connection sustained: below the offered rate when it fell behind.
    run.extra["acked_per_s"] = round(len(run.samples["write"]) / max(1e-9, last_ack[0] - origin))
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        # The server closed the socket at its queue bound: the rate is past this path.
        run.fell_behind = f"{type(failures[0]).__name__}: {failures[0]}"[:120]
        for t in watching:
            t.cancel()
        await asyncio.gather(*watching, return_exceptions=True)
    else:
        await asyncio.gather(*watching)
    for c in [writer, *watchers.values()]:
        with suppress(ServerError, OSError):
            await c.close()
    return run


def node(database_url: str, log: Path, src: str | None) -> StoreProcess:
    path = [src, BENCH] if src else [BENCH]
    return StoreProcess(database_url, functions="sync_latency_app", pythonpath=path, log_path=log)


async def _log_state(url: str) -> tuple[int, int]:
    """The log head and how many commits the ``commits`` table holds."""
    conn = await asyncpg.connect(url)
    try:
        head = int(await conn.fetchval("SELECT ts FROM log_head WHERE id = 1"))
        return head, int(await conn.fetchval("SELECT count(*) FROM commits"))
    finally:
        await conn.close()


async def _commits_after(url: str, ts: int) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM commits WHERE ts > $1", ts))
    finally:
        await conn.close()


@dataclass
class Contender:
    """One store of the paced comparison: where its stream is written and who watches it."""

    writer: StoreProcess
    watched: dict[str, StoreProcess]
    url: str | None = None  # the PostgreSQL database (commits per round are counted there)
    next_seq: int = 0


def paced_round(contender: Contender, seconds: float, rate: float) -> Run:
    """One stream on ``contender`` (and, on PostgreSQL, mutations per commit during it)."""
    head = asyncio.run(_log_state(contender.url))[0] if contender.url else 0
    run = asyncio.run(
        stream(contender.writer, contender.watched, seconds, rate, contender.next_seq)
    )
    contender.next_seq = int(run.extra["last_seq"])
    if contender.url:
        commits = asyncio.run(_commits_after(contender.url, head))
        mutations = WARM_UP + len(run.samples["write"])
        run.extra["mutations_per_commit"] = round(mutations / max(1, commits), 2)
    return run


def run_rate(
    server: str, seconds: float, rate: float, rounds: int, before: str | None
) -> dict[str, list[Run]]:
    """Interleaved rounds at ``rate``: in each round one stream on the SQLite node, then one
    on PostgreSQL (then one on ``before``'s code), every store started once, so that whatever
    else the machine does in a round weighs on both."""
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        single = stack.enter_context(
            StoreProcess(folder / "single.sqlite", functions="sync_latency_app", pythonpath=[BENCH])
        )
        contenders = {"sqlite": Contender(single, {"same node": single})}
        for key, src in [("pg", None), ("pg_before", before)] if before else [("pg", None)]:
            url = stack.enter_context(database(server))
            tag = "before" if src else "after"
            a = stack.enter_context(node(url, folder / f"a-{tag}.log", src))
            b = stack.enter_context(node(url, folder / f"b-{tag}.log", src))
            contenders[key] = Contender(a, {"node A": a, "node B": b}, url)
        runs: dict[str, list[Run]] = {key: [] for key in contenders}
        for i in range(rounds):
            load = os.getloadavg()[0]
            for key, contender in contenders.items():
                run = paced_round(contender, seconds, rate)
                run.extra["load_1m"] = round(load, 2)
                runs[key].append(run)
            report_round(rate, i + 1, {key: r[-1] for key, r in runs.items()})
    return runs


# -- back to back, alternating: the service time of one connection's mutations -----------------

BLOCK = 50


async def alternate(stores: dict[str, StoreProcess], calls: int) -> dict[str, list[float]]:
    """``bench:stamp`` back to back on one connection per store, in alternating blocks of
    ``BLOCK`` calls, so that every store sees the same machine (ms per round trip)."""
    clients = {name: await _client(store) for name, store in stores.items()}
    samples: dict[str, list[float]] = {name: [] for name in stores}
    seq = 0
    try:
        for _ in range(max(1, calls // BLOCK)):
            for name, c in clients.items():
                for _ in range(BLOCK):
                    seq += 1
                    start = time.perf_counter()
                    response = await c.request("Mutation", "bench:stamp", {"seq": seq})
                    if not response.get("success"):
                        raise RuntimeError(str(response))
                    samples[name].append((time.perf_counter() - start) * 1000)
    finally:
        for c in clients.values():
            with suppress(ServerError, OSError):
                await c.close()
    return samples


def run_alternating(server: str, calls: int, before: str | None) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        folder = Path(tmp)
        with (
            StoreProcess(
                folder / "alt.sqlite", functions="sync_latency_app", pythonpath=[BENCH]
            ) as single,
            database(server) as url,
            node(url, folder / "alt-after.log", None) as after,
        ):
            stores = {"sqlite": single, "pg": after}
            if before is None:
                return asyncio.run(alternate(stores, calls))
            with (
                database(server) as url_before,
                node(url_before, folder / "alt-before.log", before) as old,
            ):
                return asyncio.run(alternate({**stores, "pg_before": old}, calls))


def report_alternating(calls: int, samples: dict[str, list[float]]) -> dict[str, Any]:
    f = {name: summarize_ms(v) for name, v in samples.items()}
    rows = [_row("PostgreSQL, group commit", f["pg"])]
    if "pg_before" in f:
        rows.append(_row("PostgreSQL, before (--before)", f["pg_before"]))
    rows.append(_row("SQLite node (baseline)", f["sqlite"]))
    print_table(
        f"write path back to back, one connection, alternating blocks of {BLOCK} ({calls} calls)",
        HEADERS,
        rows,
    )
    f["pg_vs_sqlite_p50"] = round(f["pg"]["p50_ms"] / f["sqlite"]["p50_ms"], 2)
    print(f"PostgreSQL / SQLite p50: x{f['pg_vs_sqlite_p50']} (goal ≤ x{GOAL_WRITE_RATIO})")
    if "pg_before" in f:
        f["before_vs_after_p50"] = round(f["pg_before"]["p50_ms"] / f["pg"]["p50_ms"], 2)
        print(f"before / after p50: x{f['before_vs_after_p50']}")
    return f


# -- where one group's time goes (in process) ---------------------------------------------------


def _group(head: int, size: int, round_: int) -> list[Commit]:
    commits = []
    for i in range(size):
        ts = max(time.time_ns(), head + 1)
        doc = {"_id": f"d{i}", "_creationTime": 1.0, "key": f"k{i}", "seq": round_}
        commits.append(Commit(ts, (DocumentWrite("stamps", f"d{i}", doc),), base_ts=head))
        head = ts
    return commits


async def profile_groups(server: str, groups: int, sizes: Sequence[int]) -> dict[str, Any]:
    """Per group size: encode, the group's round trip, ``SELECT 1`` and the round trip without
    the WAL flush, on the writer's own connection, in alternating rounds (ms)."""
    name = f"mp_bench_{secrets.token_hex(4)}"
    await _admin(server, f"CREATE DATABASE {name}")
    store = PostgresPersistence(f"{server}/{name}", compact_interval_s=0)
    try:
        snap = await store.load()
        head = snap.ts
        conn = await store._writer_connection()
        out: dict[str, Any] = {}
        for size in sizes:
            s: dict[str, list[float]] = {"encode": [], "commit": [], "no_flush": [], "select1": []}
            for round_ in range(groups):
                for flush in (True, False):
                    commits = _group(head, size, round_)
                    t0 = time.perf_counter()
                    args = store._group_arguments([store._encoded(c) for c in commits])
                    t1 = time.perf_counter()
                    if not flush:
                        await conn.execute("SET synchronous_commit = off")
                    t2 = time.perf_counter()
                    outcome = await conn.fetchval(_COMMIT_GROUP, *args)
                    t3 = time.perf_counter()
                    if not flush:
                        await conn.execute("SET synchronous_commit = on")
                    assert all(o is None for o in outcome), outcome
                    head = commits[-1].ts
                    s["encode"].append((t1 - t0) * 1000)
                    s["commit" if flush else "no_flush"].append((t3 - t2) * 1000)
                t4 = time.perf_counter()
                await conn.fetchval("SELECT 1")
                s["select1"].append((time.perf_counter() - t4) * 1000)
            out[str(size)] = {k: summarize_ms(v) for k, v in s.items()}
        return out
    finally:
        await store.close()
        await _admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- the log under a fast feed: compaction keeps it bounded ---------------------------------------


async def feed_and_watch(
    store: StoreProcess, url: str, seconds: float, writers: int, markets: int
) -> dict[str, Any]:
    """``writers`` connections send ``bench:stampMany`` batches back to back for ``seconds``;
    every 0.5 s the ``commits`` table's rows are counted beside the commits made so far."""
    clients = [await _client(store) for _ in range(writers)]
    done = {"mutations": 0}
    stop = asyncio.Event()

    async def write(c: LightSyncClient) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            response = await c.request(
                "Mutation", "bench:stampMany", {"seq": seq, "markets": markets}
            )
            if not response.get("success"):
                raise RuntimeError(str(response))
            done["mutations"] += 1

    tasks = [asyncio.create_task(write(c)) for c in clients]
    conn = await asyncpg.connect(url)
    samples = []
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < seconds:
            await asyncio.sleep(0.5)
            rows = int(await conn.fetchval("SELECT count(*) FROM commits"))
            head = int(await conn.fetchval("SELECT ts FROM log_head"))
            samples.append((round(time.perf_counter() - started, 1), rows, done["mutations"], head))
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await conn.close()
        for c in clients:
            with suppress(ServerError, OSError):
                await c.close()
    elapsed = time.perf_counter() - started
    return {
        "samples": samples,
        "msgs_per_s": round(done["mutations"] * markets / elapsed),
        "mutations_per_s": round(done["mutations"] / elapsed),
    }


def run_compaction(server: str, seconds: float, writers: int, markets: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp, database(server) as url:
        options = "?retention_s=1&compact_interval_s=0.5"
        with node(url + options, Path(tmp) / "compaction.log", None) as a:
            return asyncio.run(feed_and_watch(a, url, seconds, writers, markets))


def report_compaction(markets: int, c: dict[str, Any]) -> None:
    samples = c["samples"]
    print_table(
        f"the log under a fast feed: {c['msgs_per_s']:,} msg/s ({c['mutations_per_s']:,} batches/s"
        f" of {markets} markets), retention_s=1, compact_interval_s=0.5",
        ["t s", "rows in commits", "mutations so far"],
        [[t, rows, n] for t, rows, n, _ in samples],
    )
    half = samples[len(samples) // 2 :]
    bounded = max(r for _, r, _, _ in half) < samples[-1][2] / 2
    print(
        f"bounded: {bounded} (rows in the second half ≤ {max(r for _, r, _, _ in half):,},"
        f" against {samples[-1][2]:,} mutations made)"
    )
    c["bounded"] = bounded


# -- output ----------------------------------------------------------------------------------


def _row(label: str, f: dict[str, float], goal: str = "") -> list[Any]:
    return [label, f["p50_ms"], f["p99_ms"], f["p999_ms"], f["max_ms"], f["n"], goal]


HEADERS = ["", "p50 ms", "p99 ms", "p999 ms", "max ms", "n", "goal / note"]


_LABELS = {
    "pg": "PostgreSQL, group commit",
    "pg_before": "PostgreSQL, before (--before)",
    "sqlite": "SQLite node (baseline)",
}


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b > 0 else float("nan")


KEPT_UP = 0.95


def _kept_up(run: Run, rate: float) -> bool:
    """The connection was answered at the offered rate: its latencies are service times,
    not a growing queue's."""
    return not run.fell_behind and run.extra["acked_per_s"] >= KEPT_UP * rate


def report_round(rate: float, number: int, runs: dict[str, Run]) -> None:
    """One interleaved round: each store's write path, PostgreSQL / SQLite at p50."""
    rows = []
    for key, run in runs.items():
        f = summarize_ms(run.samples["write"])
        note = f"{run.extra['acked_per_s']} acked/s"
        if "mutations_per_commit" in run.extra:
            note += f", {run.extra['mutations_per_commit']} mutations/commit"
        if run.fell_behind:
            note += ", fell behind"
        elif not _kept_up(run, rate):
            note += ", did not keep up"
        rows.append(_row(_LABELS[key], f, note))
    sqlite_p50 = summarize_ms(runs["sqlite"].samples["write"])["p50_ms"]
    pg_p50 = summarize_ms(runs["pg"].samples["write"])["p50_ms"]
    print_table(
        f"round {number} at {rate:g}/s (load {runs['sqlite'].extra['load_1m']}):"
        f" PostgreSQL / SQLite p50 x{_ratio(pg_p50, sqlite_p50)}",
        HEADERS,
        rows,
    )


def _pooled(runs: list[Run], measure: str) -> dict[str, float]:
    return summarize_ms([v for run in runs for v in run.samples[measure]])


def report_rate(rate: float, seconds: float, runs: dict[str, list[Run]]) -> dict[str, Any]:
    """Print one rate's tables over every round; its figures."""
    rounds = len(runs["sqlite"])
    f: dict[str, Any] = {"rounds": rounds, "seconds_per_round": seconds}
    for key, key_runs in runs.items():
        for measure in key_runs[0].samples:
            f[f"{key}_{measure.replace(' ', '_').lower()}"] = _pooled(key_runs, measure)
        f[f"{key}_fell_behind"] = sum(1 for r in key_runs if r.fell_behind)
        f[f"{key}_acked_per_s"] = [r.extra["acked_per_s"] for r in key_runs]
        if "mutations_per_commit" in key_runs[0].extra:
            f[f"{key}_mutations_per_commit"] = statistics.median(
                r.extra["mutations_per_commit"] for r in key_runs
            )
    f["load_1m"] = [r.extra["load_1m"] for r in runs["sqlite"]]
    per_round = [
        _ratio(
            summarize_ms(pg.samples["write"])["p50_ms"],
            summarize_ms(sq.samples["write"])["p50_ms"],
        )
        for pg, sq in zip(runs["pg"], runs["sqlite"], strict=True)
    ]
    f["pg_vs_sqlite_write_p50_rounds"] = per_round
    f["pg_vs_sqlite_write_p50"] = round(statistics.median(per_round), 2)
    # A round where either store fell behind compares two queues, not two write paths.
    both = [
        ratio
        for ratio, pg, sq in zip(per_round, runs["pg"], runs["sqlite"], strict=True)
        if _kept_up(pg, rate) and _kept_up(sq, rate)
    ]
    f["rounds_both_kept_up"] = len(both)
    f["pg_vs_sqlite_write_p50_kept_up"] = round(statistics.median(both), 2) if both else None
    # Cross-node: node B's receipt minus node A's, per round (both watch the same stream).
    cross = [
        round(
            summarize_ms(r.samples["node B"])["p50_ms"]
            - summarize_ms(r.samples["node A"])["p50_ms"],
            3,
        )
        for r in runs["pg"]
    ]
    f["cross_node_p50_ms_rounds"] = cross
    f["cross_node_p50_ms"] = round(statistics.median(cross), 3)
    title = f"{rounds} interleaved rounds of {seconds:g} s at {rate:g}/s, all samples"
    print_table(
        f"commit → receipt, {title}",
        HEADERS,
        [
            _row("PostgreSQL, node B (other)", f["pg_node_b"]),
            _row("PostgreSQL, node A (same)", f["pg_node_a"]),
            _row("SQLite, one node (baseline)", f["sqlite_same_node"]),
        ],
    )
    print(
        f"cross-node adds {f['cross_node_p50_ms']} ms at p50, median of rounds {cross}"
        f" (goal ≤ {GOAL_CROSS_NODE_MS} ms)"
    )
    rows = []
    for key in runs:
        note = f"acked/s per round {f[f'{key}_acked_per_s']}"
        if f"{key}_mutations_per_commit" in f:
            note += f"; {f[f'{key}_mutations_per_commit']} mutations/commit"
        if f[f"{key}_fell_behind"]:
            note += f"; fell behind in {f[f'{key}_fell_behind']} of {rounds}"
        rows.append(_row(_LABELS[key], f[f"{key}_write"], note))
    print_table(f"write path: send → MutationResponse, {title}", HEADERS, rows)
    print(
        f"PostgreSQL / SQLite p50: x{f['pg_vs_sqlite_write_p50']} median of rounds {per_round}"
        f" (goal ≤ x{GOAL_WRITE_RATIO}); load average per round {f['load_1m']}"
    )
    print(
        f"  over the {len(both)} of {rounds} rounds where both kept up with {rate:g}/s"
        f" (≥ {KEPT_UP:.0%} acknowledged): x{f['pg_vs_sqlite_write_p50_kept_up']}"
    )
    if "pg_before" in runs:
        f["pg_before_vs_after_write_p50"] = round(
            statistics.median(
                _ratio(
                    summarize_ms(b.samples["write"])["p50_ms"],
                    summarize_ms(a.samples["write"])["p50_ms"],
                )
                for b, a in zip(runs["pg_before"], runs["pg"], strict=True)
            ),
            2,
        )
        print(f"before / after p50: x{f['pg_before_vs_after_write_p50']} (median of rounds)")
    return f


def report_groups(groups: int, profile: dict[str, Any]) -> None:
    rows = []
    for size, p in profile.items():
        for label, key in [
            ("encode (Python)", "encode"),
            ("round trip, durable", "commit"),
            ("round trip, synchronous_commit=off", "no_flush"),
            ("SELECT 1 (floor)", "select1"),
        ]:
            rows.append(_row(f"{size} commits: {label}", p[key]))
    print_table(f"one group's time, in process ({groups} groups each)", HEADERS, rows)
    for size, p in profile.items():
        durable, loose = p["commit"]["p50_ms"], p["no_flush"]["p50_ms"]
        print(
            f"{size} commits: {durable / int(size):.3f} ms per commit at p50; the WAL flush is"
            f" {max(0.0, durable - loose) / durable:.0%} of the group's round trip"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per paced round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved paced rounds per rate")
    parser.add_argument("--rates", default="200,1000")
    parser.add_argument("--before", help="another checkout's src/ for a 'before' PostgreSQL run")
    parser.add_argument("--groups", type=int, default=300, help="groups per size in the profile")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--calls", type=int, default=1000, help="back-to-back calls per store")
    parser.add_argument("--compaction-seconds", type=float, default=8.0)
    parser.add_argument("--writers", type=int, default=8, help="connections of the fast feed")
    parser.add_argument("--markets", type=int, default=50, help="markets per batch of the feed")
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    seconds = 2.0 if opts.quick else opts.seconds
    rounds = 2 if opts.quick else opts.rounds
    groups = min(50, opts.groups) if opts.quick else opts.groups
    before = str(Path(opts.before).resolve()) if opts.before else None
    figures: dict[str, Any] = {"bench": "cluster", "seconds": seconds, "before": before}
    for rate in [float(r) for r in opts.rates.split(",") if r]:
        runs = run_rate(opts.pg, seconds, rate, rounds, before)
        figures[f"rate_{rate:g}"] = report_rate(rate, seconds, runs)
    if opts.calls > 0:
        calls = 200 if opts.quick else opts.calls
        figures["back_to_back"] = report_alternating(calls, run_alternating(opts.pg, calls, before))
    if groups > 0:
        profile = asyncio.run(profile_groups(opts.pg, groups, (1, 10)))
        report_groups(groups, profile)
        figures["group_profile"] = profile
    if opts.compaction_seconds > 0:
        compaction = run_compaction(
            opts.pg, 4.0 if opts.quick else opts.compaction_seconds, opts.writers, opts.markets
        )
        report_compaction(opts.markets, compaction)
        figures["compaction"] = compaction
    emit(figures)


if __name__ == "__main__":
    main()
