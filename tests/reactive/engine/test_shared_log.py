"""Two engines sharing one commit log: the engine side of a multi-node (PostgreSQL) store.

``MemoryLog`` is a complete, if in-memory, implementation of the ``Persistence`` and
``SharedLog`` protocols with the conflict rule a PostgreSQL log would enforce.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from marketpulse.reactive.engine import Engine, _engine
from marketpulse.reactive.persistence import (
    Commit,
    CommitConflict,
    Persistence,
    SharedLog,
    Snapshot,
)
from polling import until

from ..conftest import Recorder
from ..example_app import MODULES


class MemoryLog:
    """The shared log: an ordered list of (node, commit) and the documents it implies."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, Commit]] = []
        self.docs: dict[str, tuple[str, dict[str, Any]]] = {}
        self.changed = asyncio.Condition()
        self.conflicts = 0

    def node(self, name: int) -> Node:
        return Node(self, name)


class Node:
    def __init__(self, log: MemoryLog, name: int) -> None:
        self.log = log
        self.name = name
        self.start = 0

    async def load(self) -> Snapshot:
        self.start = len(self.log.entries)
        ts = self.log.entries[-1][1].ts if self.log.entries else 0
        return Snapshot([(t, dict(d)) for t, d in self.log.docs.values()], ts)

    async def write(self, commit: Commit) -> None:
        await asyncio.sleep(0.001)  # the round trip to the database
        head = self.log.entries[-1][1].ts if self.log.entries else 0
        if head != commit.base_ts:
            self.log.conflicts += 1
            raise CommitConflict(f"log head {head} is newer than {commit.base_ts}")
        assert commit.ts > head
        self.log.entries.append((self.name, commit))
        for w in commit.writes:
            if w.value is None:
                self.log.docs.pop(w.id, None)
            else:
                self.log.docs[w.id] = (w.table, dict(w.value))
        async with self.log.changed:
            self.log.changed.notify_all()

    async def remote_commits(self) -> AsyncIterator[Commit]:
        position = self.start
        while True:
            async with self.log.changed:
                await self.log.changed.wait_for(lambda p=position: len(self.log.entries) > p)
            while position < len(self.log.entries):
                writer, commit = self.log.entries[position]
                position += 1
                if writer != self.name:
                    yield commit

    async def close(self) -> None:
        return None


async def assert_b_sees_a(a: Engine, b: Engine) -> Any:
    """A subscriber on node B sees a mutation run on node A (through the shared log); returns
    B's subscription."""
    rec = Recorder()
    sub = b.subscribe("counters:value", {"name": "c"}, None, rec)
    r = await a.run_mutation("counters:increment", {"name": "c"})
    assert r.success and r.value == 1.0
    # B learns of A's commit from the log and re-runs its subscription.
    await until(lambda: sub.result.value == 1.0)
    assert rec.updates == [(1, 1.0)]
    assert b.ts == a.ts == r.ts
    return sub


async def test_two_nodes_share_one_log() -> None:
    log = MemoryLog()
    a_node, b_node = log.node(1), log.node(2)
    assert isinstance(a_node, Persistence) and isinstance(a_node, SharedLog)
    a = await Engine.open(a_node, MODULES)
    b = await Engine.open(b_node, MODULES)
    try:
        sub = await assert_b_sees_a(a, b)

        # Concurrent increments on both nodes conflict and are re-run: none is lost.
        results = await asyncio.gather(
            *(
                node.run_mutation("counters:increment", {"name": "c"})
                for _ in range(15)
                for node in (a, b)
            )
        )
        assert all(res.success for res in results)
        assert sorted(res.value for res in results) == [float(i) for i in range(2, 32)]
        assert log.conflicts > 0
        await until(lambda: a.ts == b.ts == log.entries[-1][1].ts)
        assert a.run_query("counters:value", {"name": "c"}).value == 31.0
        assert b.run_query("counters:value", {"name": "c"}).value == 31.0
        stamps = [c.ts for _, c in log.entries]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        assert sub.result.value == 31.0
    finally:
        await a.close()
        await b.close()

    # A third node started later loads the state and follows only newer commits.
    c = await Engine.open(log.node(3), MODULES)
    try:
        assert c.run_query("counters:value", {"name": "c"}).value == 31.0
        assert c.ts == log.entries[-1][1].ts
    finally:
        await c.close()


async def test_mutations_started_ahead_run_again_in_order_behind_another_nodes_commits() -> None:
    """Node A starts many mutations at once (a pipelined connection: each runs on the one
    before it, before its commit is written); node B commits one increment at a time. A's
    refused groups, and every mutation started after them, run again on top of B's commits,
    in the order started, each once. (That a long queue is not starved by another node's
    small commits needs two processes: tests/e2e/test_store_cluster.py.)"""
    log = MemoryLog()
    a = await Engine.open(log.node(1), MODULES)
    b = await Engine.open(log.node(2), MODULES)
    b_done: list[float] = []
    stop = asyncio.Event()

    async def hammer() -> None:
        while not stop.is_set() and len(b_done) < 3000:
            r = await b.run_mutation("counters:increment", {"name": "p"})
            assert r.success
            b_done.append(r.value)

    try:
        writer = asyncio.create_task(hammer())
        await until(lambda: len(b_done) >= 5)
        futures = [a.start_mutation("counters:increment", {"name": "p"}) for _ in range(300)]
        results = await asyncio.gather(*futures)
        stop.set()
        await writer
        values = [r.value for r in results]
        assert all(r.success for r in results)
        assert values == sorted(values) and len(set(values)) == len(values), "in order"
        assert log.conflicts > 0
        # Exactly once: every value from 1 to the total was acknowledged once.
        total = len(values) + len(b_done)
        assert sorted(values + b_done) == [float(i) for i in range(1, total + 1)]
    finally:
        await a.close()
        await b.close()


def hide_a_commit_from(log: MemoryLog, name: int) -> None:
    """Move the log's head by a commit node ``name`` will never be handed (it carries the
    node's own name, as a commit the node forgot it wrote would)."""
    head = log.entries[-1][1].ts if log.entries else 0
    log.entries.append((name, Commit(head + 1, (), base_ts=head)))


async def test_commits_refused_while_nothing_newer_arrives_fail_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A log that keeps refusing a node's commits while the commit that moved its head never
    reaches the node: the mutation fails with a clear error after ``REFUSED_MAX_S`` (instead
    of being re-run every second for ever), the node reports the lag, and it recovers once a
    newer commit arrives."""
    monkeypatch.setattr(_engine, "REFUSED_MAX_S", 0.5)
    log = MemoryLog()
    a = await Engine.open(log.node(1), MODULES)
    b = await Engine.open(log.node(2), MODULES)
    try:
        hide_a_commit_from(log, 1)
        started = time.monotonic()
        r = await asyncio.wait_for(a.run_mutation("counters:increment", {"name": "c"}), 5)
        assert not r.success and "behind the shared log" in (r.error_message or ""), r
        assert 0.5 <= time.monotonic() - started < 3
        assert a.remote_backlog_s >= 0.5  # what /health reports as lag
        # Refused again at once while still behind.
        r = await asyncio.wait_for(a.run_mutation("counters:increment", {"name": "c"}), 1)
        assert not r.success and "behind the shared log" in (r.error_message or "")
        # Another node's commit reaches it: it is current again (the hidden one wrote nothing).
        assert (await b.run_mutation("counters:increment", {"name": "c"})).success
        await until(lambda: a.ts == b.ts)
        assert a.remote_backlog_s == 0.0
        assert (await a.run_mutation("counters:increment", {"name": "c"})).value == 2.0
    finally:
        await a.close()
        await b.close()


async def test_close_does_not_wait_for_a_commit_the_log_keeps_refusing() -> None:
    log = MemoryLog()
    a = await Engine.open(log.node(1), MODULES)
    hide_a_commit_from(log, 1)
    pending = asyncio.ensure_future(a.run_mutation("counters:increment", {"name": "c"}))
    await until(lambda: log.conflicts > 0)
    await asyncio.wait_for(a.close(), 3)
    r = await pending
    assert not r.success and "closed" in (r.error_message or ""), r


class HeldNode(Node):
    """A node whose follower is handed the log's commits only once ``release`` is set: a node
    a few milliseconds behind the others."""

    def __init__(self, log: MemoryLog, name: int) -> None:
        super().__init__(log, name)
        self.release = asyncio.Event()

    async def remote_commits(self) -> AsyncIterator[Commit]:
        async for commit in super().remote_commits():
            await self.release.wait()
            yield commit


async def test_a_document_another_node_created_reaches_a_get_that_ran_before_it() -> None:
    """A client creates a document through node A (a mutation over HTTP) and subscribes to it
    by id through node B, which has not read that commit from the log yet: ``get`` finds
    nothing there, and the subscription must still show the document once B catches up."""
    log = MemoryLog()
    b_node = HeldNode(log, 2)
    a = await Engine.open(log.node(1), MODULES)
    b = await Engine.open(b_node, MODULES)
    try:
        args = {"channel": "c", "body": "hi", "sentAt": 1.0}
        r = await a.run_mutation("messages:send", args)
        assert r.success
        sub = b.subscribe("messages:get", {"id": r.value}, None, Recorder())
        assert sub.result.value is None  # B is behind
        b_node.release.set()
        await until(lambda: b.ts == a.ts)
        # Before: still None for good (the miss was not recorded as a read).
        await until(lambda: sub.result.value is not None)
        assert sub.result.value["body"] == "hi"
    finally:
        await a.close()
        await b.close()
