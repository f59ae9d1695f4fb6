"""The persistence contract between the engine and a durable store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "RECEIPT_AGE_NS",
    "RECEIPT_MAX",
    "Commit",
    "CommitConflict",
    "DocumentWrite",
    "HealthCheck",
    "Persistence",
    "PersistenceError",
    "Receipt",
    "SharedLog",
    "Snapshot",
    "UnsafeDatabase",
    "WriteNow",
]


class PersistenceError(RuntimeError):
    """The durable store could not load or write."""


class UnsafeDatabase(PersistenceError):
    """Refused at start: the database is missing, empty, another store's, older than the
    commits this store acknowledged, or corrupt. The message is one paragraph naming what was
    found and how to override (``--accept-database-loss``)."""


@dataclass(frozen=True)
class DocumentWrite:
    """The new state of one document: ``value`` is ``None`` for a delete.

    ``value`` holds Python Convex values and includes ``_id`` and ``_creationTime``.
    """

    table: str
    id: str
    value: dict[str, Any] | None


class CommitConflict(PersistenceError):
    """A shared log already holds a commit newer than ``Commit.base_ts``: the engine applies
    the newer commits (from :meth:`SharedLog.remote_commits`) and re-runs its mutations."""


RECEIPT_MAX = 100_000
"""Receipts of client mutations a store keeps (see :class:`Receipt`)..."""
RECEIPT_AGE_NS = 600 * 1_000_000_000
"""...and for how long (as long as the front doors' own de-duplication)."""


@dataclass(frozen=True)
class Receipt:
    """A client's mutation, identified, with its outcome: kept with the commit that wrote it
    so a re-send of the same request, to any node sharing the log, answers with ``result``
    instead of running again.

    Attributes:
        session: the client's sessionId.
        request: its requestId in that session.
        call: a digest of the call (caller, function, arguments): a re-send must match it.
        ts: the mutation's commit timestamp.
        result: its successful outcome, encoded by the engine (opaque to the store).
    """

    session: str
    request: int
    call: bytes
    ts: int
    result: bytes


@dataclass(frozen=True)
class Commit:
    """One atomic commit: every write, stamped with its commit timestamp (u64 ns).

    ``base_ts`` is the ts of the state the commit was computed on; a single-node store may
    ignore it, a shared log must refuse the commit (:class:`CommitConflict`) when it holds a
    newer one. ``receipts`` name the client mutations it carries (a shared log stores them in
    the same transaction and hands them to the other nodes; a single-node store may ignore
    them).
    """

    ts: int
    writes: tuple[DocumentWrite, ...]
    base_ts: int = 0
    receipts: tuple[Receipt, ...] = ()


@dataclass
class Snapshot:
    """Everything stored, as loaded at startup: ``(table, document)`` pairs and the max ts.

    A shared log also yields one from :meth:`SharedLog.remote_commits` when this node fell
    behind the compacted log: the engine then replaces its state with it. ``receipts`` are
    the recent client mutations (see :class:`Receipt`).
    """

    documents: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    ts: int = 0
    receipts: list[Receipt] = field(default_factory=list)


@runtime_checkable
class Persistence(Protocol):
    """A durable store of documents and the latest commit timestamp.

    Implementations must keep commits in order: ``write`` is called with strictly increasing
    ``ts``, and once it returns the commit survives a crash. A later ``load`` returns every
    document as of the last commit written and ``ts`` = that commit's ts (or greater).
    """

    async def load(self) -> Snapshot:
        """Read every document and the latest commit ts."""
        ...

    async def write(self, commit: Commit) -> None:
        """Store ``commit`` durably; return only once it is durable.

        Raises:
            PersistenceError: nothing was written; the message names the real cause. The
                store logs its own failures (rate-limited); the engine does not log them again.
        """
        ...

    async def close(self) -> None:
        """Flush and release resources. Idempotent."""
        ...


@runtime_checkable
class WriteNow(Protocol):
    """Optional: a durable write done on the calling thread, when that is cheap right now.

    The engine then commits a mutation in the caller's own step (write, apply, re-run, notify)
    instead of handing it to its flusher task and waiting a loop turn for it.
    """

    def write_now(self, commit: Commit) -> bool:
        """Store ``commit`` durably before returning, if it can be done now on this thread.

        Returns:
            False when it cannot (nothing was written: call ``write``).

        Raises:
            PersistenceError: the commit was attempted and failed (nothing was written).
        """
        ...


@runtime_checkable
class SharedLog(Protocol):
    """Optional, for stores shared by several engine nodes (e.g. a PostgreSQL commit log).

    The engine applies each commit this yields exactly like one of its own (memory, ts,
    subscriptions) and re-runs its queued mutations on top.
    """

    def remote_commits(self) -> AsyncIterator[Commit | Snapshot]:
        """Commits written by *other* nodes after the loaded snapshot, in ts order, forever;
        a :class:`Snapshot` instead when the commits this node needs were compacted away
        (the engine then moves to the snapshot's state)."""
        ...


@runtime_checkable
class NodeLiveness(Protocol):
    """Optional, for a shared log: which nodes sharing it are alive (a per-node lease).

    The scheduler runner records the node that claims an action and fails the action once that
    node is no longer live, so another node recovers it exactly once.
    """

    @property
    def node(self) -> str:
        """This node's name, unique among the live nodes."""
        ...

    async def live_nodes(self) -> set[str]:
        """Renew this node's own lease, then return every node whose lease holds (this one
        included).

        Raises:
            Exception: the shared store cannot be reached (the caller retries later).
        """
        ...


@runtime_checkable
class HealthCheck(Protocol):
    """Optional: a store that knows when it cannot take writes (``/health`` reports it)."""

    @property
    def problem(self) -> str | None:
        """Why writes fail now (the database lost, a full disk...); None when healthy."""
        ...


@dataclass(frozen=True)
class Readiness:
    """Whether a node sharing a log should take new clients (``/health`` answers 503 if not).

    Attributes:
        database: ``"connected"`` or ``"unreachable"`` (no answer from the database lately).
        following: whether the node is following the log now.
        lag_s: how long the node has known of commits it has not applied (while unreachable:
            how long since the database last answered).
        max_lag_s: the most lag a ready node may have.
        reason: why the node is not ready; None when it is.
    """

    database: str
    following: bool
    lag_s: float
    max_lag_s: float
    reason: str | None

    @property
    def ok(self) -> bool:
        """Ready: connected, following, and within ``max_lag_s`` of the log head."""
        return self.reason is None


@runtime_checkable
class ReadinessCheck(Protocol):
    """Optional: a shared log that knows whether this node is current with it."""

    def readiness(self, backlog_s: float = 0.0) -> Readiness:
        """This node's readiness; ``backlog_s`` is how long the engine has held commits of
        the log it has not applied yet."""
        ...
