"""PostgreSQL persistence: engines on one real PostgreSQL database (one fresh database per test).

Each engine here is a node: its own ``PostgresPersistence`` (own connections, own LISTEN),
as several ``marketpulse serve`` processes would have.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import pytest

from marketpulse.reactive.engine import Engine
from marketpulse.reactive.persistence import (
    Commit,
    CommitConflict,
    DocumentWrite,
    HealthCheck,
    PersistenceError,
    PostgresPersistence,
    Receipt,
    SharedLog,
    open_persistence,
)
from marketpulse.testing import TcpRelay, free_port
from polling import until

from ..conftest import Recorder
from ..engine.test_shared_log import assert_b_sees_a
from ..example_app import MODULES


class Cluster:
    """Engines on one database, closed at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engines: list[Engine] = []

    async def node(self, url: str | None = None, **options: Any) -> Engine:
        store = PostgresPersistence(url or self.url, **options)
        engine = await Engine.open(store, MODULES)
        self.engines.append(engine)
        return engine

    async def close(self) -> None:
        for engine in self.engines:
            await engine.close()


@pytest.fixture
async def cluster(postgres_url: str) -> AsyncIterator[Cluster]:
    c = Cluster(postgres_url)
    try:
        yield c
    finally:
        await c.close()


async def sql(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def persistence(engine: Engine) -> PostgresPersistence:
    assert isinstance(engine.persistence, PostgresPersistence)
    return engine.persistence


async def test_open_persistence_picks_postgres(postgres_url: str) -> None:
    store = open_persistence(postgres_url)
    assert isinstance(store, PostgresPersistence)
    assert isinstance(store, SharedLog) and isinstance(store, HealthCheck)
    snap = await store.load()
    try:
        assert snap.ts == 0 and snap.documents == []
        assert store.store_id is not None and store.problem is None
        assert "postgres@" not in repr(store)
    finally:
        await store.close()
    # The id stays with the database.
    again = PostgresPersistence(postgres_url)
    await again.load()
    try:
        assert again.store_id == store.store_id
    finally:
        await again.close()


async def test_unreachable_server_is_a_clear_error() -> None:
    from marketpulse.testing import free_port

    store = PostgresPersistence(f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/x")
    with pytest.raises(PersistenceError, match="cannot connect to PostgreSQL") as info:
        await store.load()
    assert "hunter2" not in str(info.value)


async def test_stale_commit_is_refused(postgres_url: str) -> None:
    store = PostgresPersistence(postgres_url)
    await store.load()
    try:
        doc = {"_id": "a1", "_creationTime": 1.0, "name": "c", "n": 1.0}
        await store.write(Commit(10, (DocumentWrite("counters", "a1", doc),), base_ts=0))
        with pytest.raises(CommitConflict):
            await store.write(Commit(20, (DocumentWrite("counters", "a1", doc),), base_ts=0))
        with pytest.raises(CommitConflict):  # not after the head
            await store.write(Commit(10, (DocumentWrite("counters", "a1", doc),), base_ts=10))
        await store.write(Commit(30, (DocumentWrite("counters", "a1", None),), base_ts=10))
    finally:
        await store.close()
    assert [r["ts"] for r in await sql(postgres_url, "SELECT ts FROM commits ORDER BY ts")] == [
        10,
        30,
    ]
    assert await sql(postgres_url, "SELECT * FROM documents") == []
    assert (await sql(postgres_url, "SELECT ts FROM log_head"))[0]["ts"] == 30


def counter(n: float) -> DocumentWrite:
    return DocumentWrite("counters", "a1", {"_id": "a1", "_creationTime": 1.0, "name": "c", "n": n})


async def write_group(store: PostgresPersistence, commits: list[Commit]) -> list[Any]:
    """Write ``commits`` concurrently, queued in one loop step; check that they went in one
    group (one round trip) and return each outcome (None or the exception)."""
    rounds: list[int] = []
    connect = store._writer_connection

    async def counted() -> asyncpg.Connection:
        rounds.append(1)
        return await connect()

    store._writer_connection = counted  # type: ignore[method-assign]
    try:
        outcomes = await asyncio.gather(*(store.write(c) for c in commits), return_exceptions=True)
    finally:
        store._writer_connection = connect  # type: ignore[method-assign]
    assert rounds == [1]
    return outcomes


async def test_a_group_refuses_only_its_stale_commit(postgres_url: str) -> None:
    store = PostgresPersistence(postgres_url)
    await store.load()
    try:
        outcomes = await write_group(
            store,
            [
                Commit(10, (counter(1),), base_ts=0),
                Commit(20, (counter(2),), base_ts=0),  # stale: computed on 0, the head is 10
                Commit(30, (counter(3), DocumentWrite("counters", "b1", None)), base_ts=10),
                Commit(30, (counter(4),), base_ts=30),  # not after the head
                Commit(40, (DocumentWrite("counters", "a1", None),), base_ts=30),
            ],
        )
    finally:
        await store.close()
    assert [type(o).__name__ for o in outcomes] == [
        "NoneType",
        "CommitConflict",
        "NoneType",
        "CommitConflict",
        "NoneType",
    ]
    rows = await sql(postgres_url, "SELECT ts, prev FROM commits ORDER BY ts")
    assert [(r["ts"], r["prev"]) for r in rows] == [(10, 0), (30, 10), (40, 30)]
    assert await sql(postgres_url, "SELECT * FROM documents") == []
    assert (await sql(postgres_url, "SELECT ts FROM log_head"))[0]["ts"] == 40
    assert store.position == 40


async def test_a_resend_within_a_group_is_written_once(postgres_url: str) -> None:
    store = PostgresPersistence(postgres_url)
    await store.load()
    receipt = Receipt("session-9", 3, b"digest", 10, b'{"v":1.0,"l":[]}')
    try:
        outcomes = await write_group(
            store,
            [
                Commit(10, (counter(1),), base_ts=0, receipts=(receipt,)),
                Commit(20, (counter(2),), base_ts=10, receipts=(receipt,)),  # the re-send
                Commit(30, (counter(5),), base_ts=10),  # the rest of the group commits
            ],
        )
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], PersistenceError)
        assert not isinstance(outcomes[1], CommitConflict)
        assert "already committed" in str(outcomes[1])
        assert store.problem is None  # a client's re-send is not the node's fault
        # Later, in a group of its own, too.
        with pytest.raises(PersistenceError, match="already committed"):
            await store.write(Commit(40, (counter(9),), base_ts=30, receipts=(receipt,)))
    finally:
        await store.close()
    rows = await sql(postgres_url, "SELECT session, request, ts FROM mutation_log")
    assert [(r["session"], r["request"], r["ts"]) for r in rows] == [("session-9", 3, 10)]
    assert [r["ts"] for r in await sql(postgres_url, "SELECT ts FROM commits ORDER BY ts")] == [
        10,
        30,
    ]
    docs = await sql(postgres_url, "SELECT ts, doc FROM documents")
    assert [r["ts"] for r in docs] == [30] and '"n":5}' in docs[0]["doc"]


async def test_groups_keep_the_order_and_every_node_follows_it(cluster: Cluster) -> None:
    a = await cluster.node()
    b = await cluster.node()
    # Many writers on node A at once and a few on node B: A's engine groups them, B's commits
    # conflict with A's groups and re-run. The log stays one chain, in ts order.
    results = await asyncio.gather(
        *(a.run_mutation("counters:increment", {"name": "c"}) for _ in range(60)),
        *(b.run_mutation("counters:increment", {"name": "c"}) for _ in range(20)),
    )
    assert sorted(r.value for r in results) == [float(i) for i in range(1, 81)]
    acked = sorted((r.ts, r.value) for r in results)
    assert [v for _, v in acked] == sorted(v for _, v in acked)  # later commit, larger value
    rows = await sql(cluster.url, "SELECT ts, prev FROM commits ORDER BY ts")
    stamps = [r["ts"] for r in rows]
    assert [r["prev"] for r in rows] == [0, *stamps[:-1]]
    assert len(rows) < 80  # some commits carried several mutations
    await until(lambda: a.ts == b.ts == stamps[-1])
    assert b.run_query("counters:value", {"name": "c"}).value == 80.0


async def test_a_subscriber_on_one_node_sees_a_mutation_on_another(cluster: Cluster) -> None:
    a = await cluster.node()
    b = await cluster.node()
    await assert_b_sees_a(a, b)


async def test_concurrent_increments_on_three_nodes_end_exact(cluster: Cluster) -> None:
    nodes = [await cluster.node() for _ in range(3)]
    per_node = 40
    results = await asyncio.gather(
        *(
            n.run_mutation("counters:increment", {"name": "c"})
            for _ in range(per_node)
            for n in nodes
        )
    )
    assert all(r.success for r in results)
    total = 3 * per_node
    assert sorted(r.value for r in results) == [float(i) for i in range(1, total + 1)]
    await until(lambda: len({n.ts for n in nodes}) == 1)
    for n in nodes:
        assert n.run_query("counters:value", {"name": "c"}).value == float(total)
    stamps = [r["ts"] for r in await sql(cluster.url, "SELECT ts FROM commits ORDER BY ts")]
    prevs = [r["prev"] for r in await sql(cluster.url, "SELECT prev FROM commits ORDER BY ts")]
    assert len(set(stamps)) == len(stamps)
    assert prevs == [0, *stamps[:-1]]  # one chain: each commit computed on the one before


async def test_a_late_node_loads_the_snapshot(cluster: Cluster) -> None:
    a = await cluster.node()
    for _ in range(5):
        await a.run_mutation("counters:increment", {"name": "c"})
    c = await cluster.node()
    assert c.run_query("counters:value", {"name": "c"}).value == 5.0
    assert c.ts == a.ts


async def test_catch_ups_racing_own_commits_never_roll_memory_back(cluster: Cluster) -> None:
    # The late-node bug's cause: a catch-up read the commits after the position, then the
    # head, as two reads; the node's own commit landing between them looked like a compacted
    # gap, and the snapshot reloaded for it (older than the node's next commit) rolled
    # memory back, losing an acknowledged increment.
    a = await cluster.node()
    pa = persistence(a)
    stop = asyncio.Event()

    async def catch_up_forever() -> None:
        while not stop.is_set():
            await pa._catch_up()
            await asyncio.sleep(0)

    racer = asyncio.create_task(catch_up_forever())
    try:
        values = [
            (await a.run_mutation("counters:increment", {"name": "c"})).value for _ in range(60)
        ]
    finally:
        stop.set()
        await racer
    assert values == [float(i) for i in range(1, 61)]
    assert pa.snapshots_reloaded == 0
    rows = await sql(cluster.url, "SELECT doc FROM documents")
    assert len(rows) == 1 and '"value":60.0' in rows[0]["doc"].replace(" ", "")


async def test_a_resent_request_runs_once_on_any_node(cluster: Cluster) -> None:
    a = await cluster.node()
    b = await cluster.node()
    request = ("session-1", 7, b"call-digest")
    first = await a.run_mutation("counters:increment", {"name": "c"}, request=request)
    assert first.success and first.value == 1.0
    await until(lambda: b.ts == a.ts)
    again = await b.run_mutation("counters:increment", {"name": "c"}, request=request)
    assert again.success and again.value == 1.0
    assert b.run_query("counters:value", {"name": "c"}).value == 1.0
    other = await b.run_mutation(
        "counters:increment", {"name": "c"}, request=("session-1", 7, b"another call")
    )
    assert not other.success and "MutationReplayRejected" in (other.error_message or "")
    rows = await sql(cluster.url, "SELECT session, request FROM mutation_log")
    assert [(r["session"], r["request"]) for r in rows] == [("session-1", 7)]
    # A node started later knows the receipt too.
    c = await cluster.node()
    late = await c.run_mutation("counters:increment", {"name": "c"}, request=request)
    assert late.success and late.value == 1.0
    assert c.run_query("counters:value", {"name": "c"}).value == 1.0


async def test_a_resend_racing_its_original_on_another_node_runs_once(cluster: Cluster) -> None:
    a = await cluster.node()
    b = await cluster.node()
    request = ("session-2", 1, b"digest")
    results = await asyncio.gather(
        a.run_mutation("counters:increment", {"name": "c"}, request=request),
        b.run_mutation("counters:increment", {"name": "c"}, request=request),
    )
    assert [r.value for r in results] == [1.0, 1.0]
    await until(lambda: a.ts == b.ts)
    assert a.run_query("counters:value", {"name": "c"}).value == 1.0
    assert b.run_query("counters:value", {"name": "c"}).value == 1.0


async def test_dropped_connections_resume_with_nothing_lost(cluster: Cluster) -> None:
    a = await cluster.node()
    b = await cluster.node()
    stop = asyncio.Event()

    async def writer(node: Engine) -> list[float]:
        values = []
        while not stop.is_set():
            r = await node.run_mutation("counters:increment", {"name": "c"})
            if r.success:
                values.append(r.value)
            else:
                assert "could not be committed" in (r.error_message or "")
        return values

    tasks = [asyncio.create_task(writer(n)) for n in (a, b)]
    await asyncio.sleep(0.3)
    # Every connection of both nodes (pools and LISTENs), as an operator or a network would.
    killed = await sql(
        cluster.url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    assert len(killed) >= 4
    await asyncio.sleep(1.0)
    stop.set()
    acknowledged = [v for t in tasks for v in await t]
    await until(lambda: a.ts == b.ts and persistence(b).problem is None)
    final = a.run_query("counters:value", {"name": "c"}).value
    assert b.run_query("counters:value", {"name": "c"}).value == final
    # Every acknowledged increment is there exactly once, and nothing else.
    assert sorted(acknowledged) == [float(i) for i in range(1, int(final) + 1)]
    head = (await sql(cluster.url, "SELECT ts FROM log_head"))[0]["ts"]
    assert a.ts == b.ts == head


async def test_compaction_and_a_node_behind_it_reloads(cluster: Cluster) -> None:
    a = await cluster.node(retention_s=0.0, compact_interval_s=0)
    b = await cluster.node(retention_s=0.0, compact_interval_s=0)
    for _ in range(20):
        await a.run_mutation("counters:increment", {"name": "c"})
    await until(lambda: b.ts == a.ts)
    async with asyncio.timeout(15):  # heartbeats record both positions
        while True:
            rows = await sql(cluster.url, "SELECT position FROM nodes")
            if len(rows) == 2 and all(r["position"] == a.ts for r in rows):
                break
            await asyncio.sleep(0.1)
    deleted = await persistence(a).compact()
    assert deleted >= 19
    rows = await sql(cluster.url, "SELECT count(*) AS n FROM commits")
    assert rows[0]["n"] <= 1
    assert b.run_query("counters:value", {"name": "c"}).value == 20.0

    # A node whose position was compacted away: its commits are gone, it reloads the snapshot.
    pb = persistence(b)
    rec = Recorder()
    sub = b.subscribe("counters:value", {"name": "c"}, None, rec)
    pb.position -= 1  # as if it had missed the last commit, now compacted
    await sql(cluster.url, "DELETE FROM commits")
    await a.run_mutation("counters:increment", {"name": "c"})
    await sql(cluster.url, "DELETE FROM commits")  # and its successor too
    await until(lambda: sub.result.value == 21.0)
    assert pb.snapshots_reloaded == 1
    assert b.ts == a.ts
    assert rec.updates[-1] == (1, 21.0)


async def test_compaction_reuses_the_space_it_frees(postgres_url: str) -> None:
    # Compacted commits must give their space back to the table, not only leave it: rows
    # merely deleted stay on disk until a vacuum, and autovacuum may not come for minutes.
    store = PostgresPersistence(postgres_url, retention_s=0.0, compact_interval_s=0)
    await store.load()
    try:
        head, sizes = 0, []
        for _ in range(6):
            for _ in range(40):
                # Big enough to be TOASTed, as a fast feed's batches are.
                doc = {"_id": "d", "_creationTime": 1.0, "blob": secrets.token_hex(8000)}
                ts = head + 1
                await store.write(Commit(ts, (DocumentWrite("blobs", "d", doc),), base_ts=head))
                head = ts
            await store.live_nodes()  # records this node's position: every commit is passed
            assert await store.compact() >= 39
            rows = await sql(postgres_url, "SELECT pg_total_relation_size('commits') AS n")
            sizes.append(rows[0]["n"])
        # Each cycle wrote ~640 kB of bodies; the table holds about one cycle's worth.
        assert sizes[-1] <= sizes[0] * 1.5, sizes
    finally:
        await store.close()


async def test_a_scheduled_job_runs_once_on_two_nodes(cluster: Cluster) -> None:
    from marketpulse.reactive.engine import SchedulerRunner

    from ..engine.test_scheduler import jobs

    a = await Engine.open(PostgresPersistence(cluster.url), [jobs])
    b = await Engine.open(PostgresPersistence(cluster.url), [jobs])
    cluster.engines += [a, b]
    runners = [SchedulerRunner(a), SchedulerRunner(b)]
    for runner in runners:
        await runner.start()
    try:
        # Mutation jobs and action jobs, scheduled on either node; both runners see each.
        for i in range(6):
            node = (a, b)[i % 2]
            r = await node.run_mutation("jobs:later", {"name": f"m{i}", "seconds": 0.05})
            assert r.success, r.error_message
            r = await node.run_mutation("jobs:schedule_slow", {"name": f"a{i}", "seconds": 0.01})
            assert r.success, r.error_message
        names = [f"m{i}" for i in range(6)] + [f"a{i}" for i in range(6)]
        names += [f"a{i}:start" for i in range(6)]

        def counts(node: Engine) -> list[Any]:
            return [node.run_query("jobs:count", {"name": n}).value for n in names]

        await until(lambda: all(c >= 1 for c in counts(a)), timeout=15)
        await asyncio.sleep(0.5)  # a second run would land by now
        await until(lambda: a.ts == b.ts)
        assert counts(a) == counts(b) == [1] * len(names)
    finally:
        for runner in runners:
            await runner.stop()


async def test_a_lost_node_s_running_action_is_failed_once_by_another_node(
    cluster: Cluster,
) -> None:
    from marketpulse.reactive.engine import SchedulerRunner

    from ..engine.test_scheduler import jobs

    a, b = [
        await Engine.open(PostgresPersistence(cluster.url, node=n, node_timeout_s=3.0), [jobs])
        for n in ("a", "b")
    ]
    cluster.engines += [a, b]
    ra, rb = SchedulerRunner(a, sweep_s=0.2), SchedulerRunner(b, sweep_s=0.2)
    assert (ra.node, rb.node) == ("a", "b")
    await ra.start()  # only a runs jobs at first, so a claims it

    def job(job_id: str) -> dict[str, Any]:
        # b may not have applied a's commit yet: an unseen job reads as an empty record.
        doc: dict[str, Any] | None = b.run_query("jobs:job", {"id": job_id}).value
        return doc or {"state": {"kind": None}}

    try:
        r = await a.run_mutation("jobs:schedule_slow", {"name": "held", "seconds": 60})
        held = r.value
        await until(lambda: job(held)["state"]["kind"] == "inProgress")
        assert job(held)["claimedBy"] == "a"
        await rb.start()
        await asyncio.sleep(2.0)  # a is alive: b's sweeps leave its action alone
        assert job(held)["state"]["kind"] == "inProgress" and rb.recovered == 0
        # a dies without a word: its action stops and its heartbeats stop, its row stays.
        await ra.stop()
        for task in persistence(a)._tasks:
            if task.get_coro().__name__ == "_periodic":  # type: ignore[union-attr]
                task.cancel()
        # b's runner counts its recovery once its commit returns, a moment after b's own
        # queries see the commit (CI saw the job failed and the count still 0).
        await until(lambda: job(held)["state"]["kind"] == "failed" and rb.recovered > 0, timeout=15)
        assert "node running it was lost" in job(held)["state"]["error"]
        assert rb.recovered == 1
        completed = job(held)["completedTime"]
        await asyncio.sleep(1.0)
        assert job(held)["completedTime"] == completed and rb.recovered == 1  # once
        counts = [b.run_query("jobs:count", {"name": n}).value for n in ("held:start", "held")]
        assert counts == [1, 0]  # it started once and was never run again
    finally:
        await ra.stop()
        await rb.stop()


def through(relay: TcpRelay, url: str) -> str:
    """``url`` with its host and port replaced by the relay's."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{relay.port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) > 1 else host))


async def test_readiness_follows_a_cut_database_and_recovers(cluster: Cluster) -> None:
    relay = TcpRelay(urlsplit(cluster.url).port or 5432).start()
    try:
        cut_off = await cluster.node(url=through(relay, cluster.url), write_timeout_s=1.0)
        writer = await cluster.node()
        pc = persistence(cut_off)
        await writer.run_mutation("counters:increment", {"name": "c"})
        await until(lambda: cut_off.ts == writer.ts)
        ready = cut_off.readiness()
        assert ready is not None and ready.ok and ready.database == "connected", ready
        # A partition: open connections hear nothing more, new ones are refused.
        relay.hold_replies()
        relay.switch(free_port())
        for _ in range(3):
            await writer.run_mutation("counters:increment", {"name": "c"})
        await until(lambda: not pc.readiness().ok, timeout=pc.stale_after_s + 10)
        ready = pc.readiness()
        assert ready.database == "unreachable" and ready.lag_s >= pc.stale_after_s * 0.9, ready
        failed = await cut_off.run_mutation("counters:increment", {"name": "c"})
        assert not failed.success and "could not be committed" in (failed.error_message or "")
        assert cut_off.run_query("counters:value", {"name": "c"}).value == 1.0  # from memory
        relay.switch(urlsplit(cluster.url).port or 5432)
        relay.release_replies()
        await until(lambda: pc.readiness().ok, timeout=20)
        assert cut_off.ts == writer.ts
        assert cut_off.run_query("counters:value", {"name": "c"}).value == 4.0
    finally:
        relay.stop()


async def waiting_on_the_head(url: str, node: str) -> int:
    """How many of ``node``'s calls wait for the ``log_head`` row lock (orphans included: the
    server keeps running a call whose connection was reset while it waits)."""
    rows = await sql(
        url,
        "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1"
        " AND wait_event_type = 'Lock'",
        f"marketpulse-{node}",
    )
    return int(rows[0]["n"])


async def counter_in_postgres(url: str) -> float:
    rows = await sql(url, "SELECT doc FROM documents WHERE tbl = 'counters'")
    return float(orjson.loads(rows[0]["doc"])["value"])


@pytest.mark.parametrize("orphan", ["lands_first", "lands_before_the_lookup", "never_lands"])
async def test_a_commit_orphaned_by_a_reset_connection_is_answered_once(
    cluster: Cluster, orphan: str
) -> None:
    """The writer's connection is reset while its group waits for the head's row lock: the
    server goes on running the orphaned call. Whether it commits first, before the writer
    looks it up, or never, the mutation is answered once, applied once, and the node's memory
    is PostgreSQL's (it was refused as a conflict with itself, then re-run for ever)."""
    relay = TcpRelay(urlsplit(cluster.url).port or 5432).start()
    locker = await asyncpg.connect(cluster.url)
    try:
        a = await cluster.node(url=through(relay, cluster.url), node="a")
        assert (await a.run_mutation("counters:increment", {"name": "c"})).success
        lock = locker.transaction()
        await lock.start()
        await locker.execute("SELECT ts FROM log_head WHERE id = 1 FOR UPDATE")
        task = asyncio.create_task(a.run_mutation("counters:increment", {"name": "c"}))
        await until(lambda: waiting_on_the_head(cluster.url, "a"), what="the group to wait")
        orphans = await sql(
            cluster.url,
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'marketpulse-a'"
            " AND wait_event_type = 'Lock'",
        )
        if orphan == "lands_first":
            relay.cut()  # a reset: the server's backend goes on waiting for the lock
            # The writer reconnects, finds nothing, re-sends: it waits behind its orphan.
            await until(
                lambda: _at_least(waiting_on_the_head(cluster.url, "a"), 2),
                what="the re-send to wait behind its orphan",
            )
            await lock.commit()  # the orphan commits first; the re-send finds the head moved
        else:
            relay.switch(free_port())  # the writer cannot reconnect for now
            relay.cut()
            if orphan == "never_lands":
                await sql(cluster.url, "SELECT pg_cancel_backend($1)", orphans[0]["pid"])
            await lock.commit()
            if orphan == "lands_before_the_lookup":
                await until(lambda: _commits_are(cluster.url, 2), what="the orphan to commit")
            relay.switch(urlsplit(cluster.url).port or 5432)
        result = await asyncio.wait_for(task, 10)
        assert result.success and result.value == 2.0, result
        assert a.run_query("counters:value", {"name": "c"}).value == 2.0
        assert await counter_in_postgres(cluster.url) == 2.0
        # The node writes on, and follows another node's commits.
        assert (await a.run_mutation("counters:increment", {"name": "c"})).value == 3.0
        b = await cluster.node()
        assert (await b.run_mutation("counters:increment", {"name": "c"})).value == 4.0
        await until(lambda: a.ts == b.ts)
        assert a.run_query("counters:value", {"name": "c"}).value == 4.0
        assert await counter_in_postgres(cluster.url) == 4.0
        assert len(await sql(cluster.url, "SELECT ts FROM commits")) == 4
        assert a.timings.conflicts == 0
        await until(lambda: persistence(a).readiness().ok, what="node a to be ready")
        await asyncio.wait_for(a.close(), 5)
    finally:
        await locker.close()
        relay.stop()


async def _at_least(count: Any, n: int) -> bool:
    return int(await count) >= n


async def _commits_are(url: str, n: int) -> bool:
    return len(await sql(url, "SELECT ts FROM commits")) == n


def test_the_follower_hands_over_every_own_commit_the_writer_does_not_answer() -> None:
    """Of this node's commits in the log, only those the writer is answering are left to it
    (and noted as landed, so a lost connection cannot make the writer refuse them); any other
    (the writer gave up on it, outcome unknown, and an orphaned call committed it later) is
    the engine's to apply."""
    store = PostgresPersistence("postgresql://nowhere/x", node="a")
    answered = store._encoded(Commit(10, (counter(1),), base_ts=0))
    store._answering = {10: answered}
    assert store._accept(10, 0, "a", answered.body)
    assert store._landed == {10} and store._inbox.empty() and store.position == 10
    store._answering = {}
    given_up = store._encoded(Commit(20, (counter(2),), base_ts=10))
    assert store._accept(20, 10, "a", given_up.body)
    handed = store._inbox.get_nowait()
    assert isinstance(handed, Commit) and handed.ts == 20 and store.position == 20
    # The same ts under this node's name, but not the commit being answered.
    store._answering = {30: store._encoded(Commit(30, (counter(3),), base_ts=20))}
    other = store._encoded(Commit(30, (counter(4),), base_ts=20))
    assert store._accept(30, 20, "a", other.body)
    assert store._landed == {10} and store._inbox.get_nowait().ts == 30  # type: ignore[union-attr]


async def test_a_write_whose_outcome_stays_unknown_fails_in_time(cluster: Cluster) -> None:
    """The head stays locked past ``write_timeout_s`` after the writer's connection was reset:
    the mutation fails with a clear error in time (and /health says why), the node's memory
    stays PostgreSQL's, and it writes again once the lock is gone."""
    relay = TcpRelay(urlsplit(cluster.url).port or 5432).start()
    locker = await asyncpg.connect(cluster.url)
    try:
        a = await cluster.node(url=through(relay, cluster.url), node="a", write_timeout_s=1.5)
        pa = persistence(a)
        assert (await a.run_mutation("counters:increment", {"name": "c"})).success
        lock = locker.transaction()
        await lock.start()
        await locker.execute("SELECT ts FROM log_head WHERE id = 1 FOR UPDATE")
        task = asyncio.create_task(a.run_mutation("counters:increment", {"name": "c"}))
        await until(lambda: waiting_on_the_head(cluster.url, "a"), what="the group to wait")
        relay.cut()
        result = await asyncio.wait_for(task, pa.write_timeout_s + 2)
        assert not result.success
        assert "PostgreSQL unreachable" in (result.error_message or ""), result
        assert not pa.readiness().ok
        # The server gave up the orphaned calls too (statement_timeout): nothing lands late.
        await until(lambda: _at_least(_none_wait(cluster.url), 1), what="the orphans to end")
        await lock.commit()
        await asyncio.sleep(0.5)
        assert await counter_in_postgres(cluster.url) == 1.0
        assert a.run_query("counters:value", {"name": "c"}).value == 1.0
        assert (await a.run_mutation("counters:increment", {"name": "c"})).value == 2.0
        await until(lambda: pa.readiness().ok, what="node a to be ready again")
        await asyncio.wait_for(a.close(), 5)
    finally:
        await locker.close()
        relay.stop()


async def _none_wait(url: str) -> int:
    return int(await waiting_on_the_head(url, "a") == 0)


async def test_readiness_reports_a_node_behind_the_log(cluster: Cluster) -> None:
    a = await cluster.node(max_lag_s=0.2)
    pa = persistence(a)
    assert pa.readiness().ok and pa.readiness().lag_s == 0.0
    # The follower heard of a head it has not read yet (as while a catch-up is stuck).
    pa._saw_head(pa.position + 1)
    await asyncio.sleep(0.3)
    ready = pa.readiness()
    assert not ready.ok and ready.database == "connected", ready
    assert ready.reason is not None and "behind the commit log" in ready.reason
    assert pa.readiness(backlog_s=0.0).lag_s >= 0.3
    pa.position = pa.position + 1  # caught up
    assert pa.readiness().ok
    assert not pa.readiness(backlog_s=0.5).ok  # the engine held commits unapplied too long


async def test_a_data_dir_marker_refuses_a_recreated_or_foreign_database(
    postgres_url: str, tmp_path: Path
) -> None:
    from marketpulse.reactive.persistence import UnsafeDatabase

    data_dir = str(tmp_path / "node-a")
    store = PostgresPersistence(postgres_url, data_dir=data_dir)
    await store.load()
    doc = {"_id": "a1", "_creationTime": 1.0, "name": "c", "n": 1.0}
    await store.write(Commit(10, (DocumentWrite("counters", "a1", doc),), base_ts=0))
    await store.close()
    marker = orjson.loads((tmp_path / "node-a" / "postgres.marker.json").read_bytes())
    assert marker == {"store_id": store.store_id, "ts": 10}
    again = PostgresPersistence(postgres_url, data_dir=data_dir)  # the same database: fine
    await again.load()
    await again.close()

    # The database re-created empty under the node.
    for table in ("store", "log_head", "commits", "documents", "mutation_log", "nodes"):
        await sql(postgres_url, f"DROP TABLE {table}")
    with pytest.raises(UnsafeDatabase, match="holds no store") as info:
        await PostgresPersistence(postgres_url, data_dir=data_dir).load()
    assert "--accept-database-loss" in str(info.value)
    assert not await sql(  # refused before anything was created in it
        postgres_url, "SELECT 1 FROM pg_tables WHERE tablename = 'store'"
    )
    # Another store's database (a fresh id, made by a node without the marker).
    other = PostgresPersistence(postgres_url)
    await other.load()
    await other.close()
    with pytest.raises(UnsafeDatabase, match="belongs to another store"):
        await PostgresPersistence(postgres_url, data_dir=data_dir).load()
    # Told to accept the loss: it starts, and the marker follows the database from now on.
    accepted = open_persistence(f"{postgres_url}?data_dir={data_dir}", accept_database_loss=True)
    assert isinstance(accepted, PostgresPersistence)
    await accepted.load()
    await accepted.close()
    marker = orjson.loads((tmp_path / "node-a" / "postgres.marker.json").read_bytes())
    assert marker["store_id"] == other.store_id
