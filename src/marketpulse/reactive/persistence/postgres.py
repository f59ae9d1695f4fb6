"""PostgreSQL persistence: several store nodes sharing one commit log (asyncpg).

Layout (created on first use, under an advisory lock so nodes may start together):

* ``commits(ts PRIMARY KEY, prev, node, body)``: the log. ``prev`` is the log head the
  commit was computed on (the ts of the commit before it), ``body`` its writes and receipts
  as JSON: ``{"w": [[table, id, doc | null], ...], "r": [[session, request, call, ts,
  result], ...]}``.
* ``documents(id PRIMARY KEY, tbl, ts, doc)``: the current state, kept in the same
  transaction as the log, so compacting the log loses nothing.
* ``log_head(ts)``: one row, the newest commit's ts.
* ``mutation_log(session, request, call, ts, result)``: the receipts of client mutations
  (exactly once across nodes), written with the commit that carries them.
* ``nodes(node, position, seen)``: each live node's position in the log (its heartbeat).
* ``store(key, value)``: the store's random id.

Writing (group commit): one writer task, on a connection of its own, sends whatever commits
are queued as one group to ``mp_commit_group(...)``: one round trip and one transaction. It
locks the ``log_head`` row (``SELECT ... FOR UPDATE``), then takes the commits in order: a
commit whose ``base_ts`` is not the head (stale: another node, or a commit refused before it,
came first) or whose ts is not after the head is refused alone (:class:`CommitConflict`: the
engine applies the newer commits and re-runs its mutations), and so is one carrying a receipt
already in ``mutation_log`` (a re-send this node has forgotten: :class:`PersistenceError`);
each other one is appended, its documents and receipts written, the head moved to it and the
other nodes ``pg_notify``\\ d. Rows locked in ts order make the
commit timestamps strictly increasing across the cluster. A write returns once PostgreSQL
committed its group (``synchronous_commit`` as the server has it, durable by default).

Why one writer and one connection: the head's row lock makes a node's commits serial anyway,
and each transaction costs a WAL flush, so several connections would queue on the lock and pay
one flush each, where one round trip carries a whole group with one flush. A connection of its
own also skips the pool's acquire and its reset query on release, a second round trip per
commit (``bench/cluster.py``). A group whose connection drops mid-commit does not know whether
it committed: the writer reconnects and looks its commits up (by ts and node) before answering,
until ``write_timeout_s``. The server may still be running the call the lost connection carried
(an orphan, waiting for the head's lock: nothing tells it its client is gone) and commit it
after that look-up: the re-sent group then finds its own commit in the log and
``mp_commit_group`` answers it as committed, not as a conflict; a commit of this node's the
follower sees while the writer answers it counts as committed too; and one the writer gave up
on (outcome unknown) is handed to the engine like another node's. ``statement_timeout`` on the
writer's connection bounds how long an orphan may run.

Following (:meth:`PostgresPersistence.remote_commits`): a dedicated connection ``LISTEN``\\ s;
a notification carries the commit itself when it fits (else only its ts), and is applied when
its ``prev`` is this node's position. Anything else (a gap, a lost notification, a dropped
connection, a commit too big to notify) is filled by a catch-up read of ``commits`` by ts;
the head is also polled every ``poll_interval_s`` for the same reason. The connection is
re-opened with backoff. A node whose position was compacted away (the first commit after it
does not follow it) reloads the snapshot and hands it to the engine.

Compaction: every node heartbeats its position into ``nodes``; every ``compact_interval_s``
a node deletes the commits at or below every live node's position that are also older than
``retention_s`` (a node silent for ``node_timeout_s`` is not live), and receipts older than
the engine keeps them, then vacuums ``commits`` so that the space they held is reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import orjson
import structlog

from ..values import json_to_value, value_to_json
from . import shown_url
from ._failures import FailureLog
from ._identity import DatabaseState, Marker, judge, read_marker, refusal_text, write_marker
from ._types import (
    RECEIPT_AGE_NS,
    Commit,
    CommitConflict,
    DocumentWrite,
    PersistenceError,
    Readiness,
    Receipt,
    Snapshot,
    UnsafeDatabase,
)

log = structlog.get_logger("marketpulse.persistence")

__all__ = ["CHANNEL", "GROUP_MAX", "OPTIONS", "PostgresPersistence", "from_url"]

CHANNEL = "marketpulse_commits"
"""The ``LISTEN``/``NOTIFY`` channel of the commit log."""

_RESENT = -1  # mp_commit_group's outcome for a re-sent request
_NOTIFY_MAX = 7000  # PostgreSQL refuses payloads of 8000 bytes or more
_CATCH_UP_ROWS = 1000

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS store (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log_head (id INT PRIMARY KEY CHECK (id = 1), ts BIGINT NOT NULL);
INSERT INTO log_head (id, ts) VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS commits (
    ts BIGINT PRIMARY KEY, prev BIGINT NOT NULL, node TEXT NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, tbl TEXT NOT NULL, ts BIGINT NOT NULL, doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mutation_log (
    session TEXT NOT NULL, request BIGINT NOT NULL, call BYTEA NOT NULL, ts BIGINT NOT NULL,
    result TEXT NOT NULL, PRIMARY KEY (session, request)
);
CREATE INDEX IF NOT EXISTS mutation_log_ts ON mutation_log (ts);
CREATE TABLE IF NOT EXISTS nodes (
    node TEXT PRIMARY KEY, position BIGINT NOT NULL, seen TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- One group of commits, in order, in one transaction (see "Writing" above). Per commit i:
-- p_bases/p_tss/p_bodies[i]; its writes are the entries of p_w* whose p_wc is i (p_docs NULL:
-- a delete), its receipts those of p_r* whose p_rc is i. Returns, per commit, NULL if it was
-- committed (by this call or, for a re-sent group, by an earlier one), else the log head it
-- was refused at (-1: a re-sent request).
CREATE OR REPLACE FUNCTION mp_commit_group(
    p_node TEXT, p_bases BIGINT[], p_tss BIGINT[], p_bodies TEXT[],
    p_wc INT[], p_ids TEXT[], p_tbls TEXT[], p_docs TEXT[],
    p_rc INT[], p_sessions TEXT[], p_requests BIGINT[], p_calls BYTEA[], p_rts BIGINT[],
    p_results TEXT[]
) RETURNS BIGINT[] LANGUAGE plpgsql AS $$
DECLARE
    head BIGINT;
    outcome BIGINT[] := '{{}}';
BEGIN
    SELECT ts INTO head FROM log_head WHERE id = 1 FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_tss, 1), 0) LOOP
        -- Refused, nothing written, the rest of the group goes on: stale (computed on an
        -- older head) or not after the head (the head returned), or a re-send of a request
        -- already committed, here or earlier in this group (-1).
        IF head <> p_bases[i] OR p_tss[i] <= head THEN
            -- Unless the log holds this very commit (its ts, node, base and body): the call
            -- that carried it was orphaned by a lost connection and committed it after the
            -- writer looked it up. This is its re-send, answered as committed (NULL): refused,
            -- its node would take its own commit for another's and re-run its mutations.
            IF p_tss[i] <= head AND EXISTS (
                SELECT 1 FROM commits WHERE ts = p_tss[i] AND node = p_node
                    AND prev = p_bases[i] AND body = p_bodies[i]
            ) THEN
                outcome := outcome || NULL::BIGINT;
            ELSE
                outcome := outcome || head;
            END IF;
            CONTINUE;
        END IF;
        -- (Statements that would find nothing are skipped: each costs a little in plpgsql.)
        IF i = ANY(p_rc) AND EXISTS (
            SELECT 1 FROM unnest(p_rc, p_sessions, p_requests) AS r(c, s, q)
            JOIN mutation_log m ON m.session = r.s AND m.request = r.q WHERE r.c = i
        ) THEN
            outcome := outcome || -1::BIGINT;
            CONTINUE;
        END IF;
        INSERT INTO commits (ts, prev, node, body) VALUES (p_tss[i], head, p_node, p_bodies[i]);
        INSERT INTO documents (id, tbl, ts, doc)
            SELECT d_id, d_tbl, p_tss[i], d_doc
            FROM unnest(p_wc, p_ids, p_tbls, p_docs) AS w(c, d_id, d_tbl, d_doc)
            WHERE c = i AND d_doc IS NOT NULL
            ON CONFLICT (id) DO UPDATE SET tbl = excluded.tbl, ts = excluded.ts, doc = excluded.doc;
        IF array_position(p_docs, NULL) IS NOT NULL THEN
            DELETE FROM documents WHERE id IN (
                SELECT d_id FROM unnest(p_wc, p_ids, p_docs) AS w(c, d_id, d_doc)
                WHERE c = i AND d_doc IS NULL
            );
        END IF;
        IF i = ANY(p_rc) THEN
            INSERT INTO mutation_log (session, request, call, ts, result)
                SELECT s, q, k, t, res
                FROM unnest(p_rc, p_sessions, p_requests, p_calls, p_rts, p_results)
                    AS r(c, s, q, k, t, res)
                WHERE c = i;
        END IF;
        IF octet_length(p_bodies[i]) <= {_NOTIFY_MAX} THEN
            PERFORM pg_notify('{CHANNEL}', head || ' ' || p_tss[i] || ' ' || p_node || ' ' || p_bodies[i]);
        ELSE
            PERFORM pg_notify('{CHANNEL}', head || ' ' || p_tss[i] || ' ' || p_node);
        END IF;
        head := p_tss[i];
        outcome := outcome || NULL::BIGINT;
    END LOOP;
    UPDATE log_head SET ts = head WHERE id = 1;
    RETURN outcome;
END $$;
"""
_SCHEMA_LOCK = 0x6D61726B  # the advisory lock held while creating the schema

_COMMIT_GROUP = (
    "SELECT mp_commit_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
)

# The log head and up to $2 commits after $1, read in one statement (one snapshot); a row
# with a NULL ts when there are none.
_CATCH_UP = """
SELECT h.ts AS head, c.ts, c.prev, c.node, c.body FROM log_head h
LEFT JOIN LATERAL (
    SELECT ts, prev, node, body FROM commits WHERE ts > $1 ORDER BY ts LIMIT $2
) c ON true
WHERE h.id = 1 ORDER BY c.ts
"""

# Server errors that mean "the connection or the server is going away", not "this statement
# is wrong" (a client-side failure is never a refusal either).
_CONNECTION_ERRORS = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # pg_terminate_backend, shutdown
    asyncpg.exceptions.CannotConnectNowError,
)


def _encode_body(commit: Commit, docs: list[str | None]) -> str:
    writes = [
        [w.table, w.id, orjson.Fragment(d) if d is not None else None]
        for w, d in zip(commit.writes, docs, strict=True)
    ]
    receipts = [
        [r.session, r.request, r.call.hex(), r.ts, orjson.Fragment(r.result)]
        for r in commit.receipts
    ]
    return orjson.dumps({"w": writes, "r": receipts}).decode()


def _decode_body(ts: int, prev: int, body: str | bytes) -> Commit:
    data = orjson.loads(body)
    writes = tuple(
        DocumentWrite(t, i, json_to_value(d) if d is not None else None) for t, i, d in data["w"]
    )
    receipts = tuple(
        Receipt(s, int(q), bytes.fromhex(c), int(rts), orjson.dumps(res))
        for s, q, c, rts, res in data["r"]
    )
    return Commit(ts, writes, base_ts=prev, receipts=receipts)


GROUP_MAX = 256
"""At most this many commits in one group (one round trip), so one group's time stays
bounded however many are queued."""


@dataclass(frozen=True)
class _Encoded:
    """A commit with its documents and log body encoded (JSON text)."""

    commit: Commit
    docs: list[str | None]
    body: str


@dataclass(frozen=True)
class _Queued:
    encoded: _Encoded
    future: asyncio.Future[None]


OPTIONS = (
    "write_timeout_s",
    "retention_s",
    "compact_interval_s",
    "node_timeout_s",
    "max_lag_s",
    "node",
    "data_dir",
)
"""Query parameters of a ``postgresql://`` URL that are this store's options, not the
server's (``?retention_s=60&compact_interval_s=10``); see :func:`from_url`."""
_TEXT_OPTIONS = ("node", "data_dir")
MARKER_NAME = "postgres.marker.json"
"""The identity marker's file name in a node's ``data_dir``."""


def from_url(url: str, *, accept_loss: bool = False) -> PostgresPersistence:
    """A :class:`PostgresPersistence` for ``url``, its store options (:data:`OPTIONS`) taken
    out of the query string and the rest left to asyncpg.

    Raises:
        ValueError: an option that is not a number (``node`` is a name).
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options: dict[str, Any] = {}
    for key, value in query:
        if key in OPTIONS:
            try:
                options[key] = value if key in _TEXT_OPTIONS else float(value)
            except ValueError:
                raise ValueError(
                    f"{key} in the database URL must be a number, not {value!r}"
                ) from None
    rest = urlencode([(k, v) for k, v in query if k not in OPTIONS])
    return PostgresPersistence(
        urlunsplit(parts._replace(query=rest)), accept_loss=accept_loss, **options
    )


class PostgresPersistence:
    """The commit log and documents in PostgreSQL, shared by every node given the same URL.

    Implements :class:`~marketpulse.reactive.persistence.Persistence`,
    :class:`~marketpulse.reactive.persistence.SharedLog` and
    :class:`~marketpulse.reactive.persistence.HealthCheck`.

    Args:
        dsn: ``postgresql://user@host:port/database``.
        node: this node's name in ``nodes`` (default: a random one per process).
        write_timeout_s: how long a write keeps trying through a lost connection before it
            fails (a clear transient error, never a false success).
        poll_interval_s: how often the log head is read, in case a notification was lost.
        heartbeat_s: how often this node records its position.
        node_timeout_s: a node silent this long is not live (compaction ignores it).
        compact_interval_s: how often this node compacts the log (0: never).
        retention_s: commits younger than this are kept even below every position.
        max_lag_s: the most a ready node may lag the log (see :meth:`readiness`).
        data_dir: a folder of this node's own, where it keeps an identity marker (the store id
            and the newest ts it saw durable): a later start refuses a database that is
            another store's, was re-created empty, or lost commits the marker records.
        accept_loss: start on such a database all the same (warned).
    """

    def __init__(
        self,
        dsn: str,
        *,
        node: str | None = None,
        write_timeout_s: float = 10.0,
        poll_interval_s: float = 0.5,
        heartbeat_s: float = 1.0,
        node_timeout_s: float = 30.0,
        compact_interval_s: float = 10.0,
        retention_s: float = 60.0,
        max_lag_s: float = 5.0,
        data_dir: str | None = None,
        accept_loss: bool = False,
    ) -> None:
        self.dsn = dsn
        self.node = node or secrets.token_hex(6)
        self.write_timeout_s = write_timeout_s
        self.poll_interval_s = poll_interval_s
        self.heartbeat_s = heartbeat_s
        self.node_timeout_s = node_timeout_s
        self.compact_interval_s = compact_interval_s
        self.retention_s = retention_s
        self.max_lag_s = max_lag_s
        self.marker_file = Path(data_dir) / MARKER_NAME if data_dir else None
        self.accept_loss = accept_loss
        self._marked = -1  # the ts the marker file records
        # No answer from the database for this long: it counts as unreachable (the
        # follower hears from it at least every poll interval when all is well).
        self.stale_after_s = max(2.0, 4 * poll_interval_s)
        self.store_id: str | None = None
        """The store's random id, kept in the database (``store('id')``)."""
        self._position = 0
        self._head_seen = 0  # the newest log head this node has heard of
        self._behind_since: float | None = None  # since when _head_seen > position
        self._contact = time.monotonic()  # when the database last answered
        self.compacted = 0
        """Commits this node deleted by compaction (for tests and metrics)."""
        self.snapshots_reloaded = 0
        """Times this node fell behind the compacted log and reloaded the snapshot."""
        self._pool: asyncpg.Pool | None = None
        self._inbox: asyncio.Queue[Commit | Snapshot] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._notified: list[str] = []
        # The commits of the group the writer is answering (by ts), and those of them the
        # follower already saw in the log: committed, whatever a lost connection hides from
        # the writer. Any other commit of this node's in the log is the engine's to apply
        # (see _accept).
        self._answering: dict[int, _Encoded] = {}
        self._landed: set[int] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._queue: list[_Queued] = []
        self._writer: asyncio.Task[None] | None = None
        self._writer_conn: asyncpg.Connection | None = None
        self._closed = False
        self._failing: str | None = None
        self._failing_unreachable = False
        self._disconnected: str | None = None
        self._failures = FailureLog("store write failed")
        # A long outage: one line per cause every 10 s, not one per retry.
        self._follow_failures = FailureLog("the log follower lost PostgreSQL; reconnecting")
        self._periodic_failures = FailureLog("heartbeat or compaction failed")

    def __repr__(self) -> str:
        return f"PostgresPersistence({self._safe_dsn()!r}, node={self.node!r})"

    def _safe_dsn(self) -> str:
        return shown_url(self.dsn)  # no password in logs or errors

    @property
    def problem(self) -> str | None:
        """Why this node cannot take writes or is not current with the log; None when
        healthy."""
        return self.readiness().reason

    @property
    def position(self) -> int:
        """The newest commit of the log handed to the engine (or written by this node)."""
        return self._position

    @position.setter
    def position(self, ts: int) -> None:
        self._position = ts
        if ts >= self._head_seen:
            self._behind_since = None

    def _saw_head(self, ts: int) -> None:
        """The log head is at least ``ts`` (and the database just answered)."""
        self._contact = time.monotonic()
        if ts > self._head_seen:
            self._head_seen = ts
            if ts > self._position and self._behind_since is None:
                self._behind_since = self._contact

    def readiness(self, backlog_s: float = 0.0) -> Readiness:
        """Whether this node should take new clients: the database answers, the log is
        followed, and no commit has waited more than ``max_lag_s`` to reach memory
        (``backlog_s``: how long the engine has held commits it has not applied).
        """
        now = time.monotonic()
        silent = now - self._contact
        lag = max(backlog_s, 0.0 if self._behind_since is None else now - self._behind_since)
        reachable = self._disconnected is None and silent <= self.stale_after_s
        reason: str | None = None
        if not reachable:
            lag = max(lag, silent)
            reason = self._disconnected or f"no answer from PostgreSQL for {silent:.1f} s"
        elif self._failing is not None:
            reason = self._failing
        elif lag > self.max_lag_s:
            reason = f"behind the commit log by {lag:.1f} s (more than {self.max_lag_s:g} s)"
        return Readiness(
            database="connected" if reachable else "unreachable",
            following=self._disconnected is None and not self._closed,
            lag_s=lag,
            max_lag_s=self.max_lag_s,
            reason=reason,
        )

    # -- load -----------------------------------------------------------------------------
    @property
    def application_name(self) -> str:
        """What this node's connections are called in ``pg_stat_activity``."""
        return f"marketpulse-{self.node}"

    async def _connect_pool(self) -> asyncpg.Pool:
        try:
            # No connection floor: with one, asyncpg re-dials PostgreSQL in the background
            # during an outage and logs a traceback per attempt. Writes dial on demand and fail
            # within their timeout instead, which /health and the error already report.
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=0,
                init_size=1,
                max_size=4,
                command_timeout=self.write_timeout_s,
                server_settings={"application_name": self.application_name},
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise PersistenceError(
                f"cannot connect to PostgreSQL at {self._safe_dsn()}: {exc}"
            ) from exc
        assert pool is not None
        return pool

    async def _read_snapshot(self, conn: asyncpg.Connection) -> Snapshot:
        """Documents, the head and recent receipts as of one instant."""
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            head = await conn.fetchval("SELECT ts FROM log_head WHERE id = 1")
            rows = await conn.fetch("SELECT tbl, doc FROM documents")
            receipts = await conn.fetch(
                "SELECT session, request, call, ts, result FROM mutation_log"
            )
        snap = Snapshot(ts=int(head))
        snap.documents = [(r["tbl"], json_to_value(orjson.loads(r["doc"]))) for r in rows]
        snap.receipts = [
            Receipt(r["session"], r["request"], bytes(r["call"]), r["ts"], r["result"].encode())
            for r in receipts
        ]
        return snap

    async def load(self) -> Snapshot:
        """Create the schema if needed, read a consistent snapshot, start following the log.

        Raises:
            PersistenceError: PostgreSQL cannot be reached or read.
        """
        self._pool = await self._connect_pool()
        try:
            async with self._pool.acquire() as conn:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                    await conn.execute(_SCHEMA)
                    store_id = await conn.fetchval("SELECT value FROM store WHERE key = 'id'")
                    head = await conn.fetchval("SELECT ts FROM log_head WHERE id = 1")
                    # Refused inside the transaction: an emptied database stays untouched.
                    await self._check_marker(store_id, int(head))
                    if store_id is None:
                        store_id = secrets.token_hex(16)
                        await conn.execute(
                            "INSERT INTO store (key, value) VALUES ('id', $1)", store_id
                        )
                self.store_id = str(store_id)
                snap = await self._read_snapshot(conn)
                self._saw_head(snap.ts)
                self.position = snap.ts
                await self._heartbeat(conn)
            await self._mark()
        except UnsafeDatabase:
            await self._pool.close()
            raise
        except (OSError, asyncpg.PostgresError) as exc:
            await self._pool.close()
            raise PersistenceError(f"cannot load from PostgreSQL: {exc}") from exc
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen_forever()),
            loop.create_task(self._periodic()),
        ]
        log.info(
            "following the PostgreSQL commit log",
            db=self._safe_dsn(),
            node=self.node,
            store_id=self.store_id,
            ts=snap.ts,
            documents=len(snap.documents),
        )
        return snap

    async def _check_marker(self, store_id: str | None, head: int) -> None:
        """Refuse (:class:`UnsafeDatabase`) a database the marker says is not this store's."""
        if self.marker_file is None:
            return
        marker = await asyncio.to_thread(read_marker, self.marker_file)
        problem = judge(marker, DatabaseState(store_id, head, file_size=1))
        if problem is None:
            return
        if not self.accept_loss:
            raise UnsafeDatabase(
                refusal_text(
                    self._safe_dsn(),
                    problem,
                    restore=f"Restore the database from a backup, or point {self.marker_file}'s"
                    " node at its own database",
                )
            )
        log.warning("starting on a database that lost data, as told", db=self._safe_dsn())

    async def _mark(self) -> None:
        """Record the store id and this node's position in the marker (only ever a ts
        PostgreSQL holds: the position is committed there)."""
        if self.marker_file is None or self.store_id is None or self._marked == self.position:
            return
        position = self.position
        marker = Marker(self.store_id, position)
        await asyncio.to_thread(self.marker_file.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(write_marker, self.marker_file, marker)
        self._marked = position

    # -- write ----------------------------------------------------------------------------
    def _encoded(self, commit: Commit) -> _Encoded:
        docs = [
            orjson.dumps(value_to_json(w.value)).decode() if w.value is not None else None
            for w in commit.writes
        ]
        return _Encoded(commit, docs, _encode_body(commit, docs))

    def _group_arguments(self, group: list[_Encoded]) -> list[Any]:
        """``mp_commit_group``'s arguments: one array entry per commit, per write and per
        receipt (writes and receipts name their commit by its 1-based place)."""
        writes = [
            (place, w, d)
            for place, e in enumerate(group, start=1)
            for w, d in zip(e.commit.writes, e.docs, strict=True)
        ]
        receipts = [(place, r) for place, e in enumerate(group, start=1) for r in e.commit.receipts]
        return [
            self.node,
            [e.commit.base_ts for e in group],
            [e.commit.ts for e in group],
            [e.body for e in group],
            [place for place, _, _ in writes],
            [w.id for _, w, _ in writes],
            [w.table for _, w, _ in writes],
            [d for _, _, d in writes],
            [place for place, _ in receipts],
            [r.session for _, r in receipts],
            [r.request for _, r in receipts],
            [r.call for _, r in receipts],
            [r.ts for _, r in receipts],
            [r.result.decode() for _, r in receipts],
        ]

    async def write(self, commit: Commit) -> None:
        """Append ``commit`` if the log head is still ``commit.base_ts``; return once
        PostgreSQL committed it.

        Commits written while another group is on its way are sent together as the next
        group (see the module docstring): one round trip and one transaction for all of them,
        each checked against the head in order.

        Raises:
            CommitConflict: the log head was not ``commit.base_ts`` when its turn came
                (another node, or an earlier commit of its group, committed first), or its
                ts was not after the head: nothing of it was written.
            PersistenceError: PostgreSQL could not be reached within ``write_timeout_s``
                (nothing was written, as far as anyone can tell), or refused the commit
                (also one re-sending a request already committed).
        """
        if self._closed or self._pool is None:
            raise PersistenceError("persistence is closed")
        queued = _Queued(self._encoded(commit), asyncio.get_running_loop().create_future())
        self._queue.append(queued)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_groups())
        await queued.future

    async def _write_groups(self) -> None:
        """The one writer: send what is queued as a group, answer each commit, repeat."""
        while self._queue:
            group = self._queue[:GROUP_MAX]
            del self._queue[:GROUP_MAX]
            self._answering = {q.encoded.commit.ts: q.encoded for q in group}
            self._landed.clear()
            try:
                outcome = await self._write_group(group)
            except asyncio.CancelledError:
                # Closed with writes still queued (the engine waits for its own first): they
                # fail, their outcome unknown if the group was on its way.
                closed = PersistenceError("persistence closed before the commit was answered")
                for q in group + self._queue:
                    if not q.future.done():
                        q.future.set_exception(closed)
                self._queue.clear()
                self._stop_answering()
                raise
            except Exception as exc:
                # Those the follower saw in the log committed; the others' outcome is unknown:
                # they fail, and if they did commit, the follower hands them to the engine
                # like another node's commits (they are no longer answered here).
                error = exc if isinstance(exc, PersistenceError) else self._failed(str(exc))
                for q in group:
                    if q.future.done():
                        continue
                    if q.encoded.commit.ts in self._landed:
                        q.future.set_result(None)
                    else:
                        q.future.set_exception(error)
                self._stop_answering()
                continue
            self._failing = None
            for q, head in zip(group, outcome, strict=True):
                commit = q.encoded.commit
                if head is not None and commit.ts in self._landed:
                    # Refused, yet the follower saw it in the log (an orphaned call of a lost
                    # connection committed it): it is committed; re-running its mutations
                    # would apply them twice.
                    head = None
                if head is None:
                    self._saw_head(commit.ts)
                    self.position = max(self.position, commit.ts)
                elif head > 0:
                    self._saw_head(head)  # the follower has that commit to bring
                if q.future.done():
                    continue
                if head is None:
                    q.future.set_result(None)
                elif head == _RESENT:
                    # The node's base is current, so it applied the original commit and has
                    # since forgotten its receipt (too many, too old): re-running cannot help.
                    q.future.set_exception(
                        PersistenceError(
                            "refused: a request this commit carries was already committed"
                            " (a re-send older than the receipts this node keeps)"
                        )
                    )
                else:
                    q.future.set_exception(
                        CommitConflict(
                            f"the log head {head} is not this commit's base {commit.base_ts}"
                            f" (or this commit's ts {commit.ts} is not after it)"
                        )
                    )
            # In the same step as the position moved past them: the follower takes any later
            # sight of these commits for one it already had.
            self._stop_answering()

    def _stop_answering(self) -> None:
        self._answering = {}
        self._landed.clear()

    async def _write_group(self, group: list[_Queued]) -> list[int | None]:
        """One round trip for ``group`` (retried through lost connections until
        ``write_timeout_s``); per commit, None if committed, else the head that refused it."""
        args = self._group_arguments([q.encoded for q in group])
        stamps = args[2]
        deadline = time.monotonic() + self.write_timeout_s
        ambiguous = False
        delay = 0.05
        while True:
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    conn = await self._writer_connection()
                    if ambiguous:
                        done = await self._committed(conn, stamps, self.node)
                        if done:
                            # The group's transaction committed: those missing were refused.
                            # (Its head is unknown here; any refusal makes the engine re-read.)
                            return [None if ts in done else 0 for ts in stamps]
                    outcome: list[int | None] = list(await conn.fetchval(_COMMIT_GROUP, *args))
                    return outcome
            except Exception as exc:
                if isinstance(exc, asyncpg.PostgresError) and not isinstance(
                    exc, _CONNECTION_ERRORS
                ):
                    # (After a lost connection, an earlier call may still commit the group:
                    # then the follower hands it to the engine, see _write_groups.)
                    raise self._failed(f"PostgreSQL refused the commit: {exc}") from exc
                # The connection, the server or the client library failed mid-way (or the
                # deadline cut a round trip short): whether the group committed is unknown.
                self._drop_writer_connection()
                ambiguous = True
                if time.monotonic() + delay >= deadline:
                    cause = (
                        f"PostgreSQL unreachable: {exc or type(exc).__name__}"
                        f" (the outcome of the commit is unknown after {self.write_timeout_s:g} s)"
                    )
                    raise self._failed(cause, unreachable=True) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _writer_connection(self) -> asyncpg.Connection:
        """The writer's own connection (opened again after a loss)."""
        if self._writer_conn is None or self._writer_conn.is_closed():
            self._writer_conn = await asyncpg.connect(
                self.dsn,
                timeout=self.write_timeout_s,
                server_settings={
                    "application_name": self.application_name,
                    # A call whose connection was lost goes on on the server (while it waits
                    # for the head's lock, nothing tells it its client is gone): this bounds
                    # how long after the writer gave up such an orphan may still commit.
                    "statement_timeout": str(max(100, int(self.write_timeout_s * 1000))),
                },
            )
        return self._writer_conn

    def _drop_writer_connection(self) -> None:
        # Its state after a failed or cut-short statement is unknown: never reused.
        if self._writer_conn is not None:
            self._writer_conn.terminate()
            self._writer_conn = None

    @staticmethod
    async def _committed(conn: asyncpg.Connection, stamps: list[int], node: str) -> set[int]:
        rows = await conn.fetch(
            "SELECT ts FROM commits WHERE ts = ANY($1::BIGINT[]) AND node = $2", stamps, node
        )
        return {int(r["ts"]) for r in rows}

    def _failed(self, cause: str, *, unreachable: bool = False) -> PersistenceError:
        self._failing = cause
        self._failing_unreachable = unreachable
        self._failures.report(cause)
        return PersistenceError(f"cannot write to {self._safe_dsn()}: {cause}")

    # -- follow ---------------------------------------------------------------------------
    async def remote_commits(self) -> AsyncIterator[Commit | Snapshot]:
        """Commits of other nodes in log order (a :class:`Snapshot` after a compacted gap)."""
        while True:
            yield await self._inbox.get()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._notified.append(payload)
        self._wake.set()

    def _accept(self, ts: int, prev: int, node: str, body: str | None) -> bool:
        """Take the commit ``ts`` if it follows this node's position; False on a gap (or a
        body left out of the notification): a catch-up read is needed."""
        if ts <= self.position:
            return True  # already had it (this node's own, or read by a catch-up)
        if prev != self.position or body is None:
            return False
        answering = self._answering.get(ts) if node == self.node else None
        if answering is not None and answering.body == body and answering.commit.base_ts == prev:
            # The writer answers it (it may not know yet that it landed, see _write_groups).
            self._landed.add(ts)
        else:
            # Another node's, or one of this node's the writer no longer answers (it gave up
            # on it, outcome unknown, and an orphaned call committed it later): the engine's.
            self._inbox.put_nowait(_decode_body(ts, prev, body))
        self.position = ts
        return True

    def _drain_notifications(self) -> bool:
        """Apply the notifications received; True if a catch-up read is needed."""
        gap = False
        notes, self._notified = self._notified, []
        for payload in notes:
            parts = payload.split(" ", 3)
            prev, ts, node = int(parts[0]), int(parts[1]), parts[2]
            self._saw_head(ts)
            if not gap and not self._accept(ts, prev, node, parts[3] if len(parts) > 3 else None):
                gap = True
        return gap

    async def _catch_up(self) -> None:
        """Read every commit after this node's position (reload the snapshot if they are
        gone)."""
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            while True:
                # The head and the commits after the position in one statement, so one
                # snapshot: a commit landing between two reads (this node's own write in
                # flight, or another node's) must not look like a compacted gap.
                rows = await conn.fetch(_CATCH_UP, self.position, _CATCH_UP_ROWS)
                head = rows[0]["head"] if rows else None
                if head is not None:
                    self._saw_head(head)
                if rows and rows[0]["ts"] is None:
                    if head is not None and head > self.position:
                        await self._reload(conn)  # the head moved, its commits are gone
                    return
                for row in rows:
                    if not self._accept(row["ts"], row["prev"], row["node"], row["body"]):
                        await self._reload(conn)
                        return
                if len(rows) < _CATCH_UP_ROWS:
                    return

    async def _reload(self, conn: asyncpg.Connection) -> None:
        behind = self.position
        snap = await self._read_snapshot(conn)
        if self.position != behind or snap.ts <= behind:
            # The position moved while the snapshot was read (this node's own commit
            # landed): there was no gap after all, and this snapshot may already be older
            # than the node's memory. Applying it would roll acknowledged writes back.
            return
        self.snapshots_reloaded += 1
        log.warning(
            "the commits after this node's position were compacted away: reloading the snapshot",
            node=self.node,
            position=behind,
            head=snap.ts,
        )
        self._saw_head(snap.ts)
        self.position = snap.ts
        self._inbox.put_nowait(snap)

    async def _listen_forever(self) -> None:
        """Hold a LISTEN connection (re-opened with backoff) and follow the log."""
        delay = 0.1
        while not self._closed:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self.dsn,
                    timeout=self.write_timeout_s,
                    server_settings={"application_name": self.application_name},
                )
                await conn.add_listener(CHANNEL, self._on_notify)
                # Listening now: whatever was committed before is read by ts.
                await self._catch_up()
                self._disconnected = None
                if self._failing_unreachable:
                    self._failing = None  # the database answers again
                delay = 0.1
                while not conn.is_closed():
                    woke = False
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_interval_s):
                            await self._wake.wait()
                            woke = True
                    self._wake.clear()
                    if self._drain_notifications():
                        await self._catch_up()
                    elif not woke:
                        # A connection cut without a reset would leave this read waiting
                        # for ever: give up and reconnect instead.
                        async with asyncio.timeout(self.stale_after_s):
                            await self._poll(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._disconnected = f"not connected to PostgreSQL to follow the log: {exc}"
                self._follow_failures.report(str(exc) or type(exc).__name__)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(1.0):
                            await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _poll(self, conn: asyncpg.Connection) -> None:
        """Catch up if the head is past this node's position (a lost notification)."""
        head = await conn.fetchval("SELECT ts FROM log_head WHERE id = 1")
        if head is not None:
            self._saw_head(head)
            if head > self.position:
                await self._catch_up()

    # -- heartbeat and compaction ---------------------------------------------------------
    async def _heartbeat(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            "INSERT INTO nodes (node, position, seen) VALUES ($1, $2, now()) "
            "ON CONFLICT (node) DO UPDATE SET position = excluded.position, seen = now()",
            self.node,
            self.position,
        )

    async def live_nodes(self) -> set[str]:
        """Renew this node's row in ``nodes``, then the nodes seen within ``node_timeout_s``
        (PostgreSQL's clock, so the nodes' clocks need not agree)."""
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            await self._heartbeat(conn)
            rows = await conn.fetch(
                "SELECT node FROM nodes WHERE seen > now() - make_interval(secs => $1)",
                self.node_timeout_s,
            )
        return {str(r["node"]) for r in rows}

    async def compact(self) -> int:
        """Delete the commits every live node has passed that are older than the retention
        window (then vacuum ``commits``), and expired receipts; returns how many commits were
        deleted."""
        assert self._pool is not None
        horizon_ns = time.time_ns() - int(self.retention_s * 1e9)
        receipt_horizon_ns = time.time_ns() - RECEIPT_AGE_NS
        async with self._pool.acquire() as conn:
            status = await conn.execute(
                "DELETE FROM commits WHERE ts < $1 AND ts <= (SELECT min(position) FROM nodes "
                "WHERE seen > now() - make_interval(secs => $2))",
                horizon_ns,
                self.node_timeout_s,
            )
            await conn.execute("DELETE FROM mutation_log WHERE ts < $1", receipt_horizon_ns)
            await conn.execute(
                "DELETE FROM nodes WHERE seen < now() - make_interval(secs => $1)",
                self.node_timeout_s * 10,
            )
            deleted = int(status.split()[-1])
            if deleted:
                # A DELETE only marks rows dead: their space (bodies are TOASTed) is reused
                # once a vacuum has passed, and autovacuum comes by a database at most once
                # per autovacuum_naptime (a minute), later on a busy server, so under a fast
                # feed the table would grow by that much feed between visits
                # (bench/compaction.py). Vacuumed here, the log stays the size of its
                # retention window. SKIP_LOCKED: a node already vacuuming it does the job.
                await conn.execute("VACUUM (SKIP_LOCKED) commits")
        self.compacted += deleted
        return deleted

    async def _periodic(self) -> None:
        next_compact = time.monotonic() + self.compact_interval_s
        while not self._closed:
            await asyncio.sleep(self.heartbeat_s)
            try:
                assert self._pool is not None
                async with self._pool.acquire() as conn:
                    await self._heartbeat(conn)
                self._contact = time.monotonic()
                await self._mark()
                if self.compact_interval_s > 0 and time.monotonic() >= next_compact:
                    next_compact = time.monotonic() + self.compact_interval_s
                    await self.compact()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._periodic_failures.report(str(exc) or type(exc).__name__)

    # -- close ----------------------------------------------------------------------------
    async def close(self) -> None:
        """Stop following, leave the ``nodes`` table, close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            # The engine waits for its commits before closing: this only bounds a stuck one.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.write_timeout_s):
                    await asyncio.shield(self._writer)
            self._writer.cancel()
        if self._writer_conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._writer_conn.close()
            self._drop_writer_connection()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._mark()
        if self._pool is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._pool.execute("DELETE FROM nodes WHERE node = $1", self.node)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self._pool.close()
            self._pool.terminate()
