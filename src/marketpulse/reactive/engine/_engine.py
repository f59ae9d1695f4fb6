"""The engine: runs functions, commits mutations serially, keeps subscriptions fresh.

Consistency model. The in-memory state changes only synchronously, right after a commit is
durable; queries run synchronously, so each sees one consistent snapshot at ``engine.ts``.
Mutations also run synchronously, on the latest state *including* commits still being
written (an overlay of their net writes), so they are serial (serializable) without waiting
for each other's disk writes. Commits queue up while a write is in flight and are written
together (group commit: one durable write per group), then applied in order. After a group
is applied the engine finds the shared queries whose read sets contain an old or new index
key of a written document (nested containment lists, see ``_intervals`` and ``_nclist``), re-runs each once and
notifies listeners of the changed ones, all before yielding to the event loop; except a query
whose last run took more than a slice of CPU: it is marked stale (its listeners told, so they
hold their Transitions back) and re-run off the loop, validated like a one-shot run
(``_offloop``), and its listeners are notified when it is current again. If a write fails, that group and every commit queued behind it (computed on top of it) fail; memory
never held them.

Durability is per function (``FunctionSpec.durability``). A *relaxed* mutation's commit is
applied and answered without waiting for its write: it joins the unflushed commits, written
by the next group flush, at most ``relaxed_flush_s`` later, or earlier by the next durable
commit, whose write carries every unflushed commit before its own in the same transaction. So
the store only ever writes whole prefixes of the commit order, and a crash loses at most the
unflushed tail (docs/store.md, "Durability").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from ..._aio import call_after_waiting
from .._throttle import LogThrottle
from ..errors import ArgumentValidationError, ConvexError, QueryLimitError
from ..functions import Durability, FunctionKind, FunctionModule, FunctionSpec, canonical_path
from ..limits import RunLimits
from ..persistence import (
    RECEIPT_AGE_NS,
    RECEIPT_MAX,
    Commit,
    CommitConflict,
    DocumentWrite,
    Persistence,
    PersistenceError,
    Readiness,
    ReadinessCheck,
    Receipt,
    SharedLog,
    Snapshot,
    WriteNow,
)
from ..schema import Schema
from ..values import json_to_value, value_to_json
from ._context import ActionCtx, Identity, LogCollector, MutationCtx, QueryCtx
from ._database import DatabaseReader, DatabaseWriter
from ._intervals import SubscriptionIndex
from ._offloop import OffLoop, QueryCall
from ._overlay import Overlay
from ._readset import ReadSet
from ._results import FunctionResult, encode_json
from ._scheduler import ActionScheduler, Scheduler, resolver, system_tables
from ._store import MemoryStore, TableData, Write
from ._transaction import Transaction, copy_value
from ._watchdog import DEADLINE_WATCHDOG, Interrupted

__all__ = ["RELAXED_FLUSH_S", "CommitTimings", "Engine", "QueryListener", "SharedQuery"]

log = logging.getLogger("marketpulse.reactive.engine")
_RAISED = LogThrottle()

_NOT_RUN = FunctionResult.failure("not run")
_KIND_NAMES = {"query": "Query", "mutation": "Mutation", "action": "Action"}


RELAXED_FLUSH_S = 0.010
"""Default bound on how long a relaxed commit stays unflushed (the group flush's period)."""
RELAXED_MAX_UNFLUSHED = 10_000
"""Unflushed relaxed commits beyond this (a disk that cannot keep up, or fails) make further
relaxed mutations wait for their write like durable ones: memory stays bounded."""
_RELAXED_RETRY_S = 0.1
"""After a failed flush of relaxed commits, the next attempt waits at least this long."""

REFUSED_MAX_S = 10.0
"""A shared log that keeps refusing this node's commits (another node's came first) while no
newer commit reaches the node for this long: the refused mutations fail (a transient error,
try again) instead of being re-run for ever, and the node reports itself behind the log."""

REPLAY_REJECTED = "MutationReplayRejected: this sessionId and requestId belong to another call"


@dataclass
class _Pending:
    """A mutation whose commit is queued or being written (kept re-runnable)."""

    spec: FunctionSpec
    args: Any
    identity: Identity
    future: asyncio.Future[FunctionResult]
    request: tuple[str, int, bytes] | None = None  # (session, request, call) of a client
    relaxed: bool = False  # answered before its write is durable (FunctionSpec.durability)
    ts: int = 0
    writes: list[Write] = field(default_factory=list)
    tables: tuple[str, ...] = ()  # tables written, when someone watches tables
    result: FunctionResult = field(default_factory=lambda: FunctionResult.failure("not run"))


@dataclass
class CommitTimings:
    """Where the commit path's time goes, summed since start (seconds, wall clock).

    Cheap enough to keep always on (a clock read per stage); the store exports them on
    ``/metrics`` and ``bench/latency.py`` divides them by ``groups`` for a per-commit breakdown.

    Attributes:
        execute: running mutations (argument validation, the handler, collecting its writes).
        write: durable writes, one per group of commits or flush of relaxed ones (waiting for
            the disk included).
        apply: applying written groups to the in-memory state.
        rerun: re-running the subscribed queries a group touched and notifying listeners, in
            the group's own step and in the later turns it deferred some of them to.
        deferred: query re-runs a group's step left to a later turn of the loop (its slice
            was used up).
        groups: groups applied (each after its durable write, or, relaxed, before it).
        conflicts: groups the shared log refused because another node committed first (their
            mutations, and every one queued after them, ran again on top of that commit).
    """

    execute: float = 0.0
    write: float = 0.0
    apply: float = 0.0
    rerun: float = 0.0
    deferred: int = 0
    groups: int = 0
    conflicts: int = 0


class QueryListener(Protocol):
    """Receives result changes of a subscribed :class:`SharedQuery` (what ``subscribe`` takes)."""

    def on_query_updated(self, query: SharedQuery) -> None:
        """Called synchronously after a commit changed ``query.result``, and when a re-run off
        the loop has made a stale ``query`` current again (changed or not).

        A listener may also define ``on_query_stale(query)``: called when a commit made
        ``query.result`` out of date and its re-run went off the loop. Until the next
        ``on_query_updated`` its result is older than the engine's ts.
        """
        ...


class SharedQuery:
    """One (path, args, identity) query shared by every subscriber.

    Attributes:
        path: canonical function path.
        args: the arguments.
        identity: the caller identity.
        result: the latest :class:`FunctionResult`.
        version: incremented whenever ``result`` changes.
        listeners: current subscribers.
        runs: how many times the query has run (for tests and metrics).
        journal: where its page ended on the last run that paginated (fixed from the first);
            ``None`` for queries that do not paginate.
        rerun: its re-run in progress off the event loop, or waiting for a later turn of
            it, if any (while set, ``result`` is out of date: see :attr:`stale`).
        slow: whether its last run took longer than a slice of CPU (``inline_query_s``): its
            next re-run goes off the event loop.
    """

    __slots__ = (
        "args",
        "identity",
        "journal",
        "key",
        "kwargs",
        "listeners",
        "path",
        "read_set",
        "rerun",
        "result",
        "runs",
        "slow",
        "spec",
        "version",
    )

    def __init__(
        self,
        key: tuple[str, bytes, str, str | None],
        path: str,
        args: Any,
        identity: Identity,
        spec: FunctionSpec | None,
    ) -> None:
        self.key = key
        self.path = path
        self.args = args
        self.identity = identity
        self.spec = spec
        self.result = FunctionResult.failure("not run yet")
        self.version = 0
        self.listeners: set[QueryListener] = set()
        self.read_set = ReadSet()
        self.runs = 0
        self.kwargs: dict[str, Any] | None = None
        self.journal: str | None = None
        self.rerun: asyncio.Task[None] | _Deferred | None = None
        self.slow = False

    @property
    def stale(self) -> bool:
        """Whether a commit changed what ``result`` read and its re-run has not ended yet."""
        return self.rerun is not None

    def __repr__(self) -> str:
        return (
            f"SharedQuery({self.path!r}, version={self.version}, listeners={len(self.listeners)})"
        )


class _Deferred:
    """``SharedQuery.rerun`` of a query whose re-run waits for a later turn of the loop."""

    def cancel(self) -> bool:
        return False  # the turn skips a query whose ``rerun`` is no longer this


_DEFERRED = _Deferred()


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose __str__ itself fails
        return f"<unprintable {type(exc).__name__}>"


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ArgumentValidationError | QueryLimitError):
        return _safe_str(exc)
    return f"Uncaught {type(exc).__name__}: {_safe_str(exc)}"


class Engine:
    """The reactive store engine. Create with :meth:`open`."""

    def __init__(
        self,
        persistence: Persistence,
        modules: Iterable[FunctionModule],
        limits: RunLimits | None = None,
        *,
        relaxed_flush_s: float = RELAXED_FLUSH_S,
    ) -> None:
        if not relaxed_flush_s >= 0:
            raise ValueError(f"relaxed_flush_s must be >= 0, got {relaxed_flush_s!r}")
        self.persistence = persistence
        self._write_now: Callable[[Commit], bool] | None = (
            persistence.write_now if isinstance(persistence, WriteNow) else None
        )
        self.limits = limits or RunLimits()
        self._functions: dict[str, FunctionSpec] = {}
        schema = Schema()
        # The same module object may be reached twice (e.g. re-exported): register it once.
        for module in dict.fromkeys(modules):
            schema = schema.merged(module.schema)
            for spec in module.functions.values():
                if spec.path in self._functions:
                    raise ValueError(f"function {spec.path} is registered twice")
                self._functions[spec.path] = spec
        self._store = MemoryStore(schema)
        for name, defs in system_tables().items():
            self._store.tables[name] = TableData(name, defs)
        self._schedulable = resolver(self._functions)
        self._table_watchers: dict[str, list[Callable[[], None]]] = {}
        self._ts = 0
        self._last_creation = 0.0
        self._last_ts = 0  # the latest ts handed out (>= _ts while commits are pending)
        self._queue: list[_Pending] = []
        # Mutations whose run was overtaken by another node's commit, to run again in order
        # (before any newer one), at most _again_batch at a time (0: all) while commits of
        # this node keep being refused: see _run_again.
        self._again: list[_Pending] = []
        self._again_batch = 0
        self._overlay = Overlay()
        self._flusher: asyncio.Task[None] | None = None
        self._remote: list[Commit] = []  # commits of other nodes, not yet applied
        self._remote_event = asyncio.Event()
        self._remote_since: float | None = None  # when the oldest of _remote arrived
        # Since when the shared log has refused this node's commits with no newer commit
        # applied since (None: not refused, or caught up since).
        self._refused_since: float | None = None
        self._follower: asyncio.Task[None] | None = None
        self._remote_snapshot: Snapshot | None = None  # the log compacted past this node
        self._receipts: OrderedDict[tuple[str, int], Receipt] = OrderedDict()
        self._queries: dict[tuple[str, bytes, str, str | None], SharedQuery] = {}
        self._subs: SubscriptionIndex[SharedQuery] = SubscriptionIndex()
        # Re-runs a commit's pass left for later turns (_defer), and the turn to run them.
        self._deferred: deque[SharedQuery] = deque()
        self._deferred_turn: asyncio.Handle | None = None
        # The end of the caller's work slice (perf_counter), while one shares it (sharing_slice).
        self._slice_ends = math.inf
        self._closed = False
        # Relaxed durability. A shared log decides commit order by base_ts at write time, so
        # there a relaxed mutation is written like a durable one.
        self.relaxed_flush_s = relaxed_flush_s
        self._relaxed_ok = not isinstance(persistence, SharedLog)
        self._unflushed: list[Commit] = []  # applied relaxed commits, in ts order, not written
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flush_due = False
        self._writing = False  # the flusher is writing commits not applied yet
        self.commits = 0
        self.query_runs = 0
        self.timings = CommitTimings()
        # Slow one-shot queries run on a worker thread; every commit is applied through it.
        self.offloop = OffLoop(self.limits.inline_query_s)

    @classmethod
    async def open(
        cls,
        persistence: Persistence,
        modules: Iterable[FunctionModule],
        *,
        limits: RunLimits | None = None,
        relaxed_flush_s: float = RELAXED_FLUSH_S,
    ) -> Engine:
        """Load every stored document into memory and return a ready engine.

        ``relaxed_flush_s`` bounds how long a relaxed mutation's commit stays unwritten.

        Raises:
            ValueError: two modules register the same path or disagree about a table.
            PersistenceError: the store cannot be loaded.
        """
        engine = cls(persistence, modules, limits, relaxed_flush_s=relaxed_flush_s)
        snap = await persistence.load()
        engine._store.load(snap.documents)
        engine._ts = engine._last_ts = snap.ts
        engine._remember(snap.receipts)
        if isinstance(persistence, SharedLog):
            engine._follower = asyncio.get_running_loop().create_task(
                engine._follow(persistence.remote_commits())
            )
        engine._last_creation = max(
            (float(doc.get("_creationTime", 0.0)) for _, doc in snap.documents), default=0.0
        )
        return engine

    # -- introspection --------------------------------------------------------------------
    @property
    def ts(self) -> int:
        """The latest committed timestamp (u64 ns, strictly increasing, survives restarts)."""
        return self._ts

    @property
    def functions(self) -> Mapping[str, FunctionSpec]:
        """Canonical path -> :class:`FunctionSpec` of every registered function."""
        return self._functions

    @property
    def remote_backlog_s(self) -> float:
        """How long commits of other nodes have waited here to be applied (0 when none
        wait; they wait while a write of this node's is in flight), or since the shared log
        first refused this node's commits, if no newer commit has reached it since."""
        started = [t for t in (self._remote_since, self._refused_since) if t is not None]
        return 0.0 if not started else time.monotonic() - min(started)

    def readiness(self) -> Readiness | None:
        """Whether this node is current with a shared log and connected to it (None when
        the store is not a shared log)."""
        if isinstance(self.persistence, ReadinessCheck):
            return self.persistence.readiness(self.remote_backlog_s)
        return None

    @property
    def subscription_count(self) -> int:
        """Live shared queries."""
        return len(self._queries)

    # -- resolution -----------------------------------------------------------------------
    def _resolve(
        self, path: str, identity: Identity, kind: FunctionKind, internal_ok: bool = False
    ) -> FunctionSpec | FunctionResult:
        try:
            canonical = canonical_path(path)
        except ValueError as exc:
            return FunctionResult.failure(str(exc), ts=self._ts)
        spec = self._functions.get(canonical)
        if spec is None or (
            spec.visibility == "internal" and not (identity.is_admin or internal_ok)
        ):
            return FunctionResult.failure(
                f"Could not find public function for '{canonical}'", ts=self._ts
            )
        if spec.kind != kind:
            return FunctionResult.failure(
                f"Trying to execute {canonical} as {_KIND_NAMES[kind]}, but it is defined as "
                f"{_KIND_NAMES[spec.kind]}.",
                ts=self._ts,
            )
        return spec

    def _finish(self, value: Any, logs: LogCollector) -> FunctionResult:
        try:
            encoded_json = encode_json(value)
        except Exception as exc:  # not a Convex value, or absurdly deep
            return FunctionResult.failure(
                "Uncaught Error: the function returned a value that is not a Convex value: "
                + _safe_str(exc),
                logs.result(),
                self._ts,
            )
        if len(encoded_json) > self.limits.max_result_bytes:
            return FunctionResult.failure(
                f"Function result too large: {len(encoded_json)} bytes "
                f"(limit {self.limits.max_result_bytes})",
                logs.result(),
                self._ts,
            )
        return FunctionResult(
            True,
            value=value,
            log_lines=logs.result(),
            ts=self._ts,
            encoded_json=encoded_json,
        )

    def _failed(self, exc: Exception, path: str, logs: LogCollector) -> FunctionResult:
        if isinstance(exc, ConvexError):
            try:
                data_json = value_to_json(exc.data)
            except Exception:
                return FunctionResult.failure(
                    "Uncaught Error: ConvexError data is not a Convex value",
                    logs.result(),
                    self._ts,
                )
            return FunctionResult(
                False,
                error_message="Uncaught ConvexError: " + _safe_str(exc),
                error_data=exc.data,
                has_error_data=True,
                encoded_error_data=data_json,
                log_lines=logs.result(),
                ts=self._ts,
            )
        if not isinstance(exc, ArgumentValidationError | QueryLimitError):
            # Any client may call a function that raises as often as it likes: a few
            # tracebacks per function per 10 s, then the count of those left out.
            dropped = _RAISED.allow(path)
            if dropped is not None:
                extra = {"suppressed": dropped} if dropped else None
                log.info("function %s raised", path, exc_info=exc, extra=extra)
        return FunctionResult.failure(_error_text(exc), logs.result(), self._ts)

    def _deadline(self, limit: float) -> float | None:
        return time.monotonic() + limit if limit > 0 and math.isfinite(limit) else None

    # -- queries --------------------------------------------------------------------------
    def _execute_query(
        self,
        spec: FunctionSpec,
        args: Any,
        identity: Identity,
        kwargs: dict[str, Any] | None = None,
        journal: str | None = None,
        guard: threading.Lock | None = None,
    ) -> tuple[FunctionResult, ReadSet]:
        """Run a query at the current state; with ``guard``, on the off-loop worker thread
        (see ``_offloop``), where the caller stamps the result's ts once it is validated."""
        if guard is None:
            self.query_runs += 1  # worker runs are counted on the loop
        logs = LogCollector(self.limits.max_log_lines)
        limit = self.limits.query_time_limit
        tx = Transaction(
            self._store,
            writable=False,
            deadline=self._deadline(limit),
            time_limit=limit,
            journal=journal,
            guard=guard,
        )
        try:
            # A shared query's arguments are validated once, at subscribe time; each re-run
            # gets a fresh copy so a handler cannot corrupt them.
            kwargs = spec.validate_args(args) if kwargs is None else copy_value(kwargs)
            ctx = QueryCtx(DatabaseReader(tx), identity, logs)
            value = self._guarded(tx, lambda: spec.handler(ctx, **kwargs))
        except Exception as exc:
            return self._failed(exc, spec.path, logs), tx.read_set
        result = self._finish(value, logs)
        result.journal = tx.journal_out
        return result, tx.read_set

    def _guarded(self, tx: Transaction, call: Callable[[], Any]) -> Any:
        """Run a handler under the watchdog, which interrupts even pure-CPU loops at the
        transaction's deadline (the cooperative check catches the others first)."""
        if tx.deadline is None:
            return call()
        try:
            DEADLINE_WATCHDOG.enter(tx.deadline)
            try:
                return call()
            finally:
                DEADLINE_WATCHDOG.leave()
        except Interrupted:
            # The interrupt may have landed inside leave() itself, before it unregistered the
            # run; make sure it is unregistered, or the watcher would keep interrupting.
            while True:
                try:
                    DEADLINE_WATCHDOG.leave()
                    break
                except Interrupted:
                    continue
            raise QueryLimitError(
                f"Function execution timed out (limit {tx.time_limit or 0:g}s)"
            ) from None

    def run_query(
        self,
        path: str,
        args: Any,
        identity: Identity | None = None,
        *,
        internal_ok: bool = False,
        journal: str | None = None,
    ) -> FunctionResult:
        """Run a query once at :attr:`ts` (no subscription).

        When a live subscription has the same (path, args, identity, journal), its cached
        result is returned without running anything: invalidation keeps it current at
        :attr:`ts`. ``journal`` fixes where a paginated page ends (see ``subscribe``).
        """
        identity = identity or Identity.anonymous()
        spec = self._resolve(path, identity, "query", internal_ok)
        if isinstance(spec, FunctionResult):
            return spec
        shared = self._queries.get(self._query_key(spec.path, args, identity, journal))
        # A paginated subscription keeps the end of its first run, which a fresh run without
        # a journal would not have.
        if (
            shared is not None
            and shared.spec is spec
            and shared.journal == journal
            and not shared.stale
        ):
            shared.result.ts = self._ts
            return shared.result
        return self._execute_query(spec, args, identity, journal=journal)[0]

    async def run_queries(
        self,
        calls: Sequence[tuple[str, Any]],
        identity: Identity | None = None,
        *,
        internal_ok: bool = False,
    ) -> tuple[list[FunctionResult], float]:
        """Run one-shot queries ``(path, args)``, all at one ts, without holding the event loop
        for longer than a work slice (``run_query`` holds it for the whole run).

        Functions known to be fast run inline as :meth:`run_query` does; the others run on
        the off-loop worker and are validated against the commits applied meanwhile (see
        ``_offloop``). Every result is exact at the ts it carries, the same ts for all.

        Returns:
            The results in order, and the seconds of run time spent (to charge the caller).
        """
        identity = identity or Identity.anonymous()
        results: list[FunctionResult] = []
        todo: list[QueryCall] = []
        for path, args in calls:
            spec = self._resolve(path, identity, "query", internal_ok)
            if not isinstance(spec, FunctionResult):
                todo.append(QueryCall(len(results), spec, args))
            results.append(spec if isinstance(spec, FunctionResult) else _NOT_RUN)
        offloop = self.offloop
        if all(offloop.inline_ok(call.spec.path) for call in todo):
            spent = 0.0
            for call in todo:
                started, cpu = time.perf_counter(), time.thread_time()
                results[call.index] = self.run_query(
                    call.spec.path, call.args, identity, internal_ok=True
                )
                offloop.observe(call.spec.path, time.thread_time() - cpu)
                spent += time.perf_counter() - started
            return results, spent

        def execute(
            call: QueryCall, guard: threading.Lock | None
        ) -> tuple[FunctionResult, ReadSet]:
            return self._execute_query(call.spec, call.args, identity, guard=guard)

        ran, spent = await offloop.run(todo, execute)
        self.query_runs += len(todo)
        for call, (result, _) in zip(todo, ran, strict=True):
            result.ts = self._ts  # validated: exact now
            results[call.index] = result
        return results, spent

    @staticmethod
    def _query_key(
        canonical: str, args: Any, identity: Identity, journal: str | None = None
    ) -> tuple[str, bytes, str, str | None]:
        try:
            args_key = orjson.dumps(value_to_json(args), option=orjson.OPT_SORT_KEYS)
        except Exception:
            # Not a Convex value (or absurdly deep): never shared, and it fails validation.
            args_key = b"unshareable:%d" % id(args)
        return (canonical, args_key, identity.key, journal)

    def subscribe(
        self,
        path: str,
        args: Any,
        identity: Identity | None,
        listener: QueryListener,
        *,
        journal: str | None = None,
    ) -> SharedQuery:
        """Subscribe ``listener`` to a query; identical (path, args, identity, journal) share
        one run.

        ``journal`` is what a client sends back when it re-subscribes (the ``journal`` of the
        last result it saw): a paginated page then ends where it ended before. A query's first
        run sets its journal and every re-run keeps it, so the page's end stays fixed.

        Returns:
            The :class:`SharedQuery`; its ``result`` is current when this returns.
        """
        identity = identity or Identity.anonymous()
        key, canonical = self._subscription_key(path, args, identity, journal)
        query = self._queries.get(key)
        if query is None:
            query, runnable = self._new_query(key, canonical, path, args, identity, journal)
            if runnable:
                started = time.thread_time()
                self._rerun(query)
                # Learn which functions are slow, so their next first runs go off the loop. CPU
                # time of this thread: a loaded machine's preemption makes no query slow.
                assert query.spec is not None
                took = time.thread_time() - started
                self.offloop.observe(query.spec.path, took)
                query.slow = took > self.offloop.slice_s
            self._queries[key] = query
        query.listeners.add(listener)
        return query

    def runs_off_loop(self, path: str) -> bool:
        """Whether ``path`` is a query function known to be slow (a run of it took longer than
        ``RunLimits.inline_query_s``): :meth:`subscribe_async` runs it off the event loop."""
        try:
            return self.offloop.known_slow(canonical_path(path))
        except ValueError:
            return False

    async def subscribe_async(
        self,
        path: str,
        args: Any,
        identity: Identity | None,
        listener: QueryListener,
        *,
        journal: str | None = None,
    ) -> tuple[SharedQuery, float]:
        """:meth:`subscribe`, except that the first run of a function known to be slow runs
        off the event loop (validated like :meth:`run_queries`), so it holds nobody up.

        Later re-runs (after commits that touch its read set) of a query whose last run was
        slow run off the loop too (see :meth:`_invalidate`).

        Returns:
            The :class:`SharedQuery` (its result current when this returns) and the seconds of
            run time spent here (to charge the caller).
        """
        identity = identity or Identity.anonymous()
        key, canonical = self._subscription_key(path, args, identity, journal)
        spent = 0.0
        if key not in self._queries:
            query, runnable = self._new_query(key, canonical, path, args, identity, journal)
            spec, kwargs = query.spec, query.kwargs
            if runnable and spec is not None and self.offloop.known_slow(spec.path):

                def execute(
                    call: QueryCall, guard: threading.Lock | None
                ) -> tuple[FunctionResult, ReadSet]:
                    return self._execute_query(spec, args, identity, kwargs, journal, guard)

                ran, spent = await self.offloop.run([QueryCall(0, spec, args)], execute)
                self.query_runs += 1
                if key not in self._queries:  # else another subscriber's run is current
                    query.slow = spent > self.offloop.slice_s
                    result, read_set = ran[0]
                    result.ts = self._ts  # validated: exact now
                    self._install(query, result, read_set)
                    self._queries[key] = query
        return self.subscribe(path, args, identity, listener, journal=journal), spent

    def _subscription_key(
        self, path: str, args: Any, identity: Identity, journal: str | None
    ) -> tuple[tuple[str, bytes, str, str | None], str]:
        try:
            canonical = canonical_path(path)
        except ValueError:
            canonical = str(path)
        return self._query_key(canonical, args, identity, journal), canonical

    def _new_query(
        self,
        key: tuple[str, bytes, str, str | None],
        canonical: str,
        path: str,
        args: Any,
        identity: Identity,
        journal: str | None,
    ) -> tuple[SharedQuery, bool]:
        """A new shared query, and whether it is to run (False: its result never changes)."""
        spec = self._resolve(path, identity, "query")
        query = SharedQuery(
            key, canonical, args, identity, spec if isinstance(spec, FunctionSpec) else None
        )
        query.journal = journal
        if isinstance(spec, FunctionResult):
            query.result = spec
            return query, False
        try:
            query.kwargs = spec.validate_args(args)
        except Exception as exc:
            # Deterministic: the same arguments always fail, so never re-run it.
            query.result = FunctionResult.failure(_error_text(exc), ts=self._ts)
            return query, False
        return query, True

    def unsubscribe(self, query: SharedQuery, listener: QueryListener) -> None:
        """Remove ``listener``; the query is dropped when nobody listens any more."""
        query.listeners.discard(listener)
        if not query.listeners and self._queries.get(query.key) is query:
            del self._queries[query.key]
            self._subs.remove(query)
            if query.rerun is not None:
                query.rerun.cancel()  # perhaps before it started: clear it here
                query.rerun = None

    def _rerun(self, query: SharedQuery) -> bool:
        """Run ``query`` at the current state; return whether its outcome changed."""
        assert query.spec is not None
        result, read_set = self._execute_query(
            query.spec, query.args, query.identity, query.kwargs, query.journal
        )
        return self._install(query, result, read_set)

    def _install(self, query: SharedQuery, result: FunctionResult, read_set: ReadSet) -> bool:
        """Make ``result`` (read through ``read_set``, exact now) ``query``'s current result;
        return whether its outcome changed."""
        if result.journal is not None:
            query.journal = result.journal
        elif result.success:
            # Still the same page if the function stopped paginating (say, a branch on the
            # data): keep reporting its end so a re-subscribing client keeps it too.
            result.journal = query.journal
        query.runs += 1
        query.read_set = read_set
        self._subs.add(query, read_set)
        changed = query.runs == 1 or not result.same_outcome(query.result)
        query.result = result
        if changed and query.runs > 1:
            query.version += 1
        return changed

    # -- mutations ------------------------------------------------------------------------
    def _creation_time(self) -> float:
        now = time.time() * 1000.0
        self._last_creation = max(now, math.nextafter(self._last_creation, math.inf))
        return self._last_creation

    async def run_mutation(
        self,
        path: str,
        args: Any,
        identity: Identity | None = None,
        *,
        internal_ok: bool = False,
        request: tuple[str, int, bytes] | None = None,
    ) -> FunctionResult:
        """Run a mutation and commit it; durable before this returns, unless the mutation
        is declared ``durability="relaxed"`` (then visible, and durable within
        ``relaxed_flush_s``).

        On success ``result.ts`` is the commit timestamp (the current ts if nothing was
        written). A mutation that raises writes nothing.

        ``request`` is a client's (sessionId, requestId, call digest): the commit carries it
        (a :class:`Receipt`), and a later run under the same ids, here or on any node sharing
        the log, answers with the original outcome and writes nothing (a different call under
        those ids is refused).
        """
        # The engine's future, shielded: the flusher task owns the commit, so cancelling this
        # caller (e.g. a client that disconnects) cannot leave a durable commit unapplied.
        future = self.start_mutation(path, args, identity, internal_ok=internal_ok, request=request)
        return await asyncio.shield(future)

    def start_mutation(
        self,
        path: str,
        args: Any,
        identity: Identity | None = None,
        *,
        internal_ok: bool = False,
        request: tuple[str, int, bytes] | None = None,
    ) -> asyncio.Future[FunctionResult]:
        """Run a mutation now and return the future of its outcome (see :meth:`run_mutation`).

        The handler runs before this returns, on the latest state including the commits still
        being written, and its commit takes its place in the commit order at once: mutations
        started one after another run in that order, each sees the writes of those before it,
        and they commit (or fail) in that order. The future resolves when the commit is applied
        (durable first, unless relaxed); if an earlier commit it was computed on cannot be
        written, it fails too, and if another node committed first, it is run again on top of
        that commit (and so is every later one), all before it resolves.
        """
        identity = identity or Identity.anonymous()
        spec = self._resolve(path, identity, "mutation", internal_ok)
        if isinstance(spec, FunctionResult):
            done: asyncio.Future[FunctionResult] = asyncio.get_running_loop().create_future()
            done.set_result(spec)
            return done
        return self._start(spec, args, identity, request)

    async def run_mutation_spec(
        self,
        spec: FunctionSpec,
        args: Any,
        identity: Identity,
        *,
        request: tuple[str, int, bytes] | None = None,
    ) -> FunctionResult:
        """Run and commit the mutation ``spec`` (already resolved, maybe not registered: the
        scheduler wraps a job's function with its state change); see :meth:`run_mutation`."""
        return await asyncio.shield(self._start(spec, args, identity, request))

    def _start(
        self,
        spec: FunctionSpec,
        args: Any,
        identity: Identity,
        request: tuple[str, int, bytes] | None,
    ) -> asyncio.Future[FunctionResult]:
        future: asyncio.Future[FunctionResult] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_result(FunctionResult.failure("The server is shutting down", ts=self._ts))
            return future
        pending = _Pending(
            spec,
            args,
            identity,
            future,
            request,
            relaxed=(
                spec.durability == "relaxed"
                and self._relaxed_ok
                and len(self._unflushed) < RELAXED_MAX_UNFLUSHED
            ),
        )
        if self._again:
            # Earlier mutations wait to run again: this one runs after them.
            self._again.append(pending)
            self._wake_flusher()
            return future
        if not self._execute_mutation(pending):
            future.set_result(pending.result)
            return future
        quiet = not self._queue and not self._remote and not self._writing
        if quiet and pending.relaxed and pending.writes:
            # Every earlier commit is applied: this one is applied and answered now, and
            # written by the next group flush (a write of older commits may be in flight).
            self._apply_relaxed([pending])
            return future
        idle = quiet and self._flusher_idle()
        if idle and not pending.writes:
            future.set_result(pending.result)
            return future
        if idle and self._commit_now([pending], self._durable_commit([pending])):
            # Written, applied and durable right here: no task hop.
            return future
        # A mutation that wrote nothing but read pending commits also waits for them: it must
        # not answer with data that could still be lost.
        self._queue.append(pending)
        self._wake_flusher()
        return future

    def _execute_mutation(self, p: _Pending) -> bool:
        """Run ``p`` on the latest state including pending commits (the overlay); on success
        stamp it, add its writes to the overlay and return True."""
        # Runs synchronously, so mutations are serial even though their disk writes are
        # pipelined.
        started = time.perf_counter()
        try:
            return self._execute_mutation_timed(p)
        finally:
            self.timings.execute += time.perf_counter() - started

    def _execute_mutation_timed(self, p: _Pending) -> bool:
        if p.request is not None and self._replayed(p):
            return p.result.success
        logs = LogCollector(self.limits.max_log_lines)
        limit = self.limits.mutation_time_limit
        tx = Transaction(
            self._store,
            writable=True,
            deadline=self._deadline(limit),
            time_limit=limit,
            creation_time=self._creation_time,
            base=self._overlay,
        )
        try:
            kwargs = p.spec.validate_args(p.args)
            ctx = MutationCtx(DatabaseWriter(tx), p.identity, logs)
            ctx.scheduler = Scheduler(tx, self._schedulable)
            value = self._guarded(tx, lambda: p.spec.handler(ctx, **kwargs))
        except Exception as exc:
            p.result = self._failed(exc, p.spec.path, logs)
            return False
        p.result = self._finish(value, logs)
        if not p.result.success:
            return False
        p.writes = tx.writes()
        if self._table_watchers:
            p.tables = tuple(tx.pending.tables)
        if p.writes:
            self._last_ts = max(time.time_ns(), self._last_ts + 1)
            for w in p.writes:
                self._overlay.set(w.table, w.id, w.new)
        p.ts = self._last_ts
        return True

    # -- receipts (exactly once across nodes) -----------------------------------------------
    def _replayed(self, p: _Pending) -> bool:
        """If ``p``'s request already committed (here or on another node), answer it with that
        outcome (or refuse a different call under its ids), write nothing, and return True."""
        assert p.request is not None
        session, request, call = p.request
        receipt = self._receipts.get((session, request))
        if receipt is None:
            return False
        p.writes = []
        if receipt.call != call:
            p.result = FunctionResult.failure(REPLAY_REJECTED, ts=self._ts)
            return True
        body = orjson.loads(receipt.result)
        p.result = FunctionResult(
            True,
            value=json_to_value(body["v"]),
            log_lines=list(body["l"]),
            ts=receipt.ts,
            encoded_json=orjson.dumps(body["v"]),
        )
        # Answered at the current state, which includes the original commit (a receipt's
        # own ts could be older than the rest of a group it joins).
        p.ts = self._last_ts
        return True

    def _receipts_of(self, group: list[_Pending]) -> tuple[Receipt, ...]:
        return tuple(
            Receipt(
                p.request[0],
                p.request[1],
                p.request[2],
                p.ts,
                orjson.dumps(
                    {"v": orjson.Fragment(p.result.encoded_json), "l": p.result.log_lines}
                ),
            )
            for p in group
            if p.request is not None and p.writes
        )

    def _remember(self, receipts: Iterable[Receipt]) -> None:
        """Keep committed receipts (bounded in number and age)."""
        kept = self._receipts
        for r in receipts:
            kept[(r.session, r.request)] = r
            kept.move_to_end((r.session, r.request))
        horizon = time.time_ns() - RECEIPT_AGE_NS
        while kept:
            oldest = next(iter(kept.values()))
            if len(kept) <= RECEIPT_MAX and oldest.ts >= horizon:
                break
            kept.popitem(last=False)

    def _flusher_idle(self) -> bool:
        return self._flusher is None or self._flusher.done()

    def _wake_flusher(self) -> None:
        if self._flusher_idle():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    def _rebuild_overlay(self) -> None:
        self._overlay = Overlay()
        for p in self._queue:
            for w in p.writes:
                self._overlay.set(w.table, w.id, w.new)

    def _apply_remote(self) -> None:
        """Apply commits other nodes wrote to the shared log, then re-run the local queue on
        top of them (it was computed without them)."""
        all_points: list[tuple[str, str, bytes]] = []
        if self._remote_snapshot is not None:
            # Behind a compacted log: move to the snapshot's state by the difference, so the
            # indexes and subscriptions follow as for any commit.
            self._remote.insert(0, self._snapshot_commit(self._remote_snapshot))
            self._remember(self._remote_snapshot.receipts)
            self._remote_snapshot = None
        for commit in self._remote:
            self._remember(commit.receipts)
            writes = []
            for dw in commit.writes:
                found = self._store.get(dw.id)
                old = found[1] if found is not None else None
                if old is None and dw.value is None:
                    continue
                writes.append(Write(dw.table, dw.id, old, dw.value))
            all_points += self.offloop.apply(self._store, writes)
            self._ts = max(self._ts, commit.ts)
            self._last_ts = max(self._last_ts, commit.ts)
            self._last_creation = max(
                [self._last_creation]
                + [float(w.new.get("_creationTime", 0.0)) for w in writes if w.new is not None]
            )
        if self._table_watchers:
            self._notify_tables({dw.table for c in self._remote for dw in c.writes})
        self._remote = []
        self._remote_since = None
        self._refused_since = None
        self._remote_event.clear()
        queue, self._queue = self._queue, []
        self._overlay = Overlay()
        # The queue's stamps were never committed: handing them out again (to a mutation that
        # writes nothing) would put this node's ts past the log's head.
        self._last_ts = self._ts
        self._again = queue + self._again
        self._run_again()
        self._invalidate(all_points)

    def _run_again(self) -> None:
        """Run the first mutations waiting to run again (in order, onto the queue).

        After a refused commit only half of the refused group's mutations run again before
        the next write: a node whose whole queue ran again each time could be refused forever
        by another node committing small groups faster than the queue re-runs (a large group
        takes longer to run and write, and so loses every race).
        """
        limit = self._again_batch or len(self._again)
        todo, self._again = self._again[:limit], self._again[limit:]
        for p in todo:
            if self._execute_mutation(p):
                self._queue.append(p)
            else:
                p.future.set_result(p.result)

    def _snapshot_commit(self, snap: Snapshot) -> Commit:
        """The writes that turn memory into ``snap`` (only documents that differ)."""
        wanted = {str(doc["_id"]): (table, doc) for table, doc in snap.documents}
        writes: list[DocumentWrite] = []
        for name, table in self._store.tables.items():
            for doc_id in list(table.docs):
                if doc_id not in wanted:
                    writes.append(DocumentWrite(name, doc_id, None))
        for doc_id, (table_name, doc) in wanted.items():
            found = self._store.get(doc_id)
            if found is None or found[1] != doc:
                writes.append(DocumentWrite(table_name, doc_id, doc))
        return Commit(snap.ts, tuple(writes))

    async def _flush(self) -> None:
        """Write queued commits in groups (one durable write per group), then apply them;
        apply relaxed-only groups at once; write the unflushed relaxed commits when due."""
        while (
            self._queue
            or self._again
            or self._remote
            or self._remote_snapshot is not None
            or (self._flush_due and self._unflushed)
        ):
            if self._remote or self._remote_snapshot is not None:
                self._apply_remote()
                continue
            if self._again and not self._queue:
                self._run_again()
                continue
            group, self._queue = self._queue, []
            if group and not any(p.writes and not p.relaxed for p in group):
                # Nothing here asks for durability: no write to wait for.
                self._apply_relaxed(group)
                continue
            flushing = len(self._unflushed)
            commit = self._durable_commit(group)
            if self._commit_now(group, commit):
                continue
            started = time.perf_counter()
            # While commits not yet applied are written, later ones must wait for them.
            self._writing = bool(group)
            try:
                if commit is not None:
                    await self.persistence.write(commit)
            except CommitConflict as exc:
                # Another node committed first: wait for its commit, apply it and re-run.
                self.timings.conflicts += 1
                now = time.monotonic()
                if self._refused_since is None:
                    self._refused_since = now
                stuck = now - self._refused_since
                if self._closed or stuck >= REFUSED_MAX_S:
                    # Closing, the follower is stopped: that commit will not come. Else it has
                    # not come for too long: re-running on the same state cannot help.
                    self._unflushed_failed()
                    self._fail_queued(group, self._behind(exc, stuck))
                    continue
                self._again_batch = max(1, len(group) // 2)
                self._queue = group + self._queue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._remote_event.wait()
                continue
            except Exception as exc:
                self._unflushed_failed()
                self._fail_queued(group, exc)
                continue
            finally:
                self._writing = False
                self.timings.write += time.perf_counter() - started
            # No await from here on: memory, ts and subscriptions change in one step.
            self._again_batch = 0
            self._refused_since = None
            self._flushed(flushing)
            if group:
                self._apply_group(group)

    # -- relaxed durability -----------------------------------------------------------------
    def _apply_relaxed(self, group: list[_Pending]) -> None:
        """Apply and answer ``group`` (every earlier commit is applied) before its write; its
        commit joins the unflushed ones, written within ``relaxed_flush_s``."""
        commit = self._net_commit(group)
        self._apply_group(group)
        if commit is not None:
            self._unflushed.append(commit)
            self._arm_flush(self.relaxed_flush_s)

    def _arm_flush(self, delay: float) -> None:
        if self._flush_timer is None and not self._closed:
            self._flush_timer = asyncio.get_running_loop().call_later(delay, self._flush_now)

    def _flush_now(self) -> None:
        self._flush_timer = None
        self._flush_due = True
        self._wake_flusher()

    def _durable_commit(self, group: list[_Pending]) -> Commit | None:
        """One commit of every unflushed relaxed commit, then ``group``'s net writes: a
        durable write first makes every earlier commit durable, in the same transaction."""
        own = self._net_commit(group)
        if not self._unflushed:
            return own
        commits = [*self._unflushed, *([own] if own is not None else [])]
        if len(commits) == 1:
            return commits[0]
        net: dict[str, DocumentWrite] = {}
        for c in commits:
            for w in c.writes:
                # Re-inserted so the write keeps the order of its last change.
                net.pop(w.id, None)
                net[w.id] = w
        return Commit(
            commits[-1].ts,
            tuple(net.values()),
            base_ts=commits[0].base_ts,
            receipts=tuple(r for c in commits for r in c.receipts),
        )

    def _flushed(self, count: int) -> None:
        """The first ``count`` unflushed commits are durable now."""
        if not count:
            return
        del self._unflushed[:count]
        self._flush_due = False
        if self._unflushed:
            self._arm_flush(self.relaxed_flush_s)
        elif self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    def _unflushed_failed(self) -> None:
        """A write carrying the unflushed commits failed (the persistence logged why): they
        stay applied and unflushed, and the flush is tried again a little later."""
        if self._unflushed:
            self._flush_due = False
            self._arm_flush(max(self.relaxed_flush_s, _RELAXED_RETRY_S))

    @property
    def unflushed(self) -> int:
        """Relaxed commits applied and answered but not yet durable."""
        return len(self._unflushed)

    def _commit_now(self, group: list[_Pending], commit: Commit | None) -> bool:
        """Commit ``group`` (its net ``commit``) in this step (write, apply, re-run, notify) if
        the persistence can write it durably on this thread right now; False if not (nothing
        was done)."""
        if self._write_now is None or commit is None:
            return False
        started = time.perf_counter()
        flushing = len(self._unflushed)
        try:
            if not self._write_now(commit):
                return False
        except Exception as exc:
            self._unflushed_failed()
            self._fail_queued(group, exc)
            return True
        finally:
            self.timings.write += time.perf_counter() - started
        self._flushed(flushing)
        if group:
            self._apply_group(group)
        return True

    def _net_commit(self, group: list[_Pending]) -> Commit | None:
        net: dict[str, DocumentWrite] = {}
        for p in group:
            for w in p.writes:
                net[w.id] = DocumentWrite(w.table, w.id, w.new)
        if not net:
            return None
        return Commit(
            group[-1].ts, tuple(net.values()), base_ts=self._ts, receipts=self._receipts_of(group)
        )

    def _behind(self, conflict: CommitConflict, stuck: float) -> PersistenceError:
        if self._closed:
            return PersistenceError(
                f"the store closed while the shared log refused the commit ({conflict})"
            )
        return PersistenceError(
            f"this node is behind the shared log: its commits were refused for {stuck:.0f} s"
            f" and the newer commits have not reached it ({conflict}); try again"
        )

    def _fail_queued(self, group: list[_Pending], exc: Exception) -> None:
        """``group`` could not be committed; everything queued since was computed on top of
        it and fails too."""
        if not isinstance(exc, PersistenceError):
            log.error("commit failed", exc_info=exc)
        # else the persistence logged it already, once per cause per interval: one traceback
        # per mutation would drown the log while a disk is full.
        failed, self._queue = group + self._queue, []
        self._overlay = Overlay()
        self._last_ts = self._ts  # (see _apply_remote)
        for p in failed:
            p.result = FunctionResult.failure(
                f"Mutation could not be committed: {exc}", p.result.log_lines, self._ts
            )
            if not p.future.done():
                p.future.set_result(p.result)

    def _apply_group(self, group: list[_Pending]) -> None:
        """A group is durable: apply it to memory, re-run the queries it touched, notify their
        listeners and answer its callers, all in one synchronous step."""
        started = time.perf_counter()
        points = self.offloop.apply(self._store, [w for p in group for w in p.writes])
        self._ts = max(self._ts, group[-1].ts)
        if any(p.request is not None and p.writes for p in group):
            self._remember(self._receipts_of(group))
        self.commits += sum(1 for p in group if p.writes)
        self._rebuild_overlay()
        applied = time.perf_counter()
        self._invalidate(points)
        if self._table_watchers:
            self._notify_tables({t for p in group for t in p.tables})
        t = self.timings
        t.groups += 1
        t.apply += applied - started
        t.rerun += time.perf_counter() - applied
        for p in group:
            p.result.ts = p.ts
            if not p.future.done():
                p.future.set_result(p.result)

    def watch_table(self, table: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (synchronously) after each applied commit that wrote ``table``,
        here or on another node; returns a function that stops watching."""
        self._table_watchers.setdefault(table, []).append(callback)

        def stop() -> None:
            callbacks = self._table_watchers.get(table, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                self._table_watchers.pop(table, None)

        return stop

    def _notify_tables(self, tables: set[str]) -> None:
        for table in tables:
            for callback in list(self._table_watchers.get(table, ())):
                try:
                    callback()
                except Exception:
                    log.exception("table watcher failed")

    async def run_system(
        self, body: Callable[[Transaction], Any], *, durability: Durability = "durable"
    ) -> Any:
        """Run ``body(tx)`` as a mutation of its own (as the system, who may write system
        tables) and return its value once committed (``durability`` as a function's).

        Raises:
            RuntimeError: it failed or could not be committed.
        """
        spec = FunctionSpec(
            "_system",
            "run",
            "mutation",
            "internal",
            lambda ctx: body(ctx.db._tx),
            (),
            Any,
            durability=durability,
        )
        result = await self.run_mutation_spec(spec, {}, Identity.anonymous())
        if not result.success:
            raise RuntimeError(result.error_message)
        return result.value

    async def _follow(self, feed: AsyncIterator[Commit | Snapshot]) -> None:
        """Queue commits of other nodes as the shared log delivers them."""
        try:
            async for item in feed:
                if isinstance(item, Snapshot):
                    # Everything before it is superseded.
                    self._remote = []
                    self._remote_snapshot = item
                else:
                    self._remote.append(item)
                if self._remote_since is None:
                    self._remote_since = time.monotonic()
                self._remote_event.set()
                self._wake_flusher()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the shared commit log feed failed")

    def _written_keys(self, writes: list[Write]) -> list[tuple[str, str, bytes]]:
        store = self._store
        return [key for w in writes for key in store.table(w.table).keys_touched(w.old, w.new)]

    def affected_queries(self, writes: list[Write]) -> set[SharedQuery]:
        """The live shared queries whose read sets contain a key written by ``writes``."""
        return self._subs.find(self._written_keys(writes))

    @contextlib.contextmanager
    def sharing_slice(self, ends: float) -> Iterator[None]:
        """Within the block, the re-runs that commits trigger inline share the caller's work
        slice, which ends at ``ends`` (``time.perf_counter()``), instead of each taking a
        fresh one after it; what the slice leaves goes to the next turn of the loop.

        A loop turn that runs several mutations (a socket's pipelined ones) would otherwise
        hold the loop for its own slice plus the last commit's whole re-run slice.
        """
        outer, self._slice_ends = self._slice_ends, ends
        try:
            yield
        finally:
            self._slice_ends = outer

    def _invalidate(self, points: list[tuple[str, str, bytes]]) -> None:
        """Bring every live query that read one of ``points`` up to date: inline if it is
        fast (notifying the listeners of a changed one now) for one slice of this step, the
        rest in later turns of the loop (:meth:`_defer`), and a slow one off the loop."""
        queries = iter(self._subs.find(points))
        if time.perf_counter() >= self._slice_ends or self._rerun_inline(queries, held=False):
            for query in queries:
                if self._due(query):
                    self._defer(query)

    def _due(self, query: SharedQuery) -> bool:
        """Whether ``query`` is to re-run inline now; a slow one is sent off the loop."""
        if self._queries.get(query.key) is not query or query.rerun is not None:
            return False  # gone, or already re-running (validated against this commit too)
        if query.slow:
            self._rerun_off_loop(query)
            return False
        return True

    def _rerun_inline(self, queries: Iterator[SharedQuery], *, held: bool) -> bool:
        """Re-run ``queries`` on this thread until the pass has used a slice of the loop
        (``inline_query_s``); return whether it stopped early, the rest of ``queries`` unread.

        ``held``: their listeners were told these queries are stale, so each is notified when
        current again, changed or not (else only a changed one is).
        """
        slice_s = self.offloop.slice_s
        clock = time.perf_counter
        # A query is slow when one run takes over ``slice_s`` of this thread's CPU. Reading
        # the thread's CPU clock is a system call (1-4 µs here, two per re-run: a tenth of a
        # 360-query pass), the wall clock is not; CPU <= wall, so only a run whose wall time
        # passed the slice needs the CPU clock. Its CPU is then bounded below by the CPU
        # since the last reading minus the wall time of the runs before it since then.
        cpu_mark = time.thread_time()
        wall_mark = clock()
        # Wall time, not CPU: a turn that was preempted held the loop just as long.
        pass_ends = min(wall_mark + slice_s, self._slice_ends)
        for query in queries:
            if not self._due(query):
                continue
            started = clock()
            changed = self._rerun(query)
            ended = clock()
            if ended - started > slice_s:
                cpu = time.thread_time()
                # A query can grow slow (its table grows): its next re-runs go off the loop.
                query.slow = (cpu - cpu_mark) - (started - wall_mark) > slice_s
                cpu_mark, wall_mark = cpu, clock()
            else:
                query.slow = False
            if changed or held:
                self._notify(query, "on_query_updated")
            if ended >= pass_ends:
                return True
        return False

    def _defer(self, query: SharedQuery) -> None:
        """Mark ``query`` stale and re-run it inline in a later turn of the loop (its
        listeners hold their Transitions back meanwhile, as for a re-run off the loop)."""
        query.rerun = _DEFERRED
        self._deferred.append(query)
        self.timings.deferred += 1
        if self._deferred_turn is None:
            # The commit's own follow-up, first thing next turn (as its fan-out); the further
            # slices go behind what waited (_rerun_deferred).
            self._deferred_turn = asyncio.get_running_loop().call_soon(self._rerun_deferred)
        self._notify(query, "on_query_stale")

    def _rerun_deferred(self) -> None:
        """A later turn's slice of the deferred re-runs, at the state of now (a commit in
        between found them stale and left them to this)."""
        self._deferred_turn = None
        started = time.perf_counter()
        waiting = self._deferred

        def live() -> Iterator[SharedQuery]:
            while waiting:
                query = waiting.popleft()
                if query.rerun is _DEFERRED and self._queries.get(query.key) is query:
                    query.rerun = None
                    yield query

        if self._rerun_inline(live(), held=True) and waiting:
            self._deferred_turn = call_after_waiting(self._rerun_deferred)
        self.timings.rerun += time.perf_counter() - started

    @staticmethod
    def _notify(query: SharedQuery, hook: str) -> None:
        for listener in list(query.listeners):
            method = getattr(listener, hook, None)
            if method is None:
                continue
            try:
                method(query)
            except Exception:
                log.exception("query listener failed")

    def _rerun_off_loop(self, query: SharedQuery) -> None:
        """Mark ``query`` stale and re-run it on the off-loop worker; its listeners hold their
        Transitions back until it is current (one Transition stays at one ts)."""
        query.rerun = asyncio.get_running_loop().create_task(self._rerun_later(query))
        self._notify(query, "on_query_stale")

    async def _rerun_later(self, query: SharedQuery) -> None:
        spec = query.spec
        assert spec is not None
        args, identity, kwargs, journal = query.args, query.identity, query.kwargs, query.journal

        def execute(
            call: QueryCall, guard: threading.Lock | None
        ) -> tuple[FunctionResult, ReadSet]:
            return self._execute_query(spec, args, identity, kwargs, journal, guard)

        try:
            ran, spent = await self.offloop.run([QueryCall(0, spec, args)], execute)
            # Back inline once it runs within the slice (say, after a cold first run).
            query.slow = spent > self.offloop.slice_s
        except asyncio.CancelledError:
            query.rerun = None
            raise
        except Exception:  # an engine bug: keep the old result, never strand the listeners
            log.exception("off-loop re-run of %s failed", spec.path)
            ran = []
        query.rerun = None
        self.query_runs += 1
        if ran and self._queries.get(query.key) is query:
            result, read_set = ran[0]
            result.ts = self._ts  # validated: exact now
            self._install(query, result, read_set)
        # Changed or not: the listeners held their Transitions back for it.
        self._notify(query, "on_query_updated")

    # -- actions --------------------------------------------------------------------------
    async def run_action(
        self, path: str, args: Any, identity: Identity | None = None, *, internal_ok: bool = False
    ) -> FunctionResult:
        """Run an action (``async``); it may call queries, mutations and actions by path."""
        identity = identity or Identity.anonymous()
        spec = self._resolve(path, identity, "action", internal_ok)
        if isinstance(spec, FunctionResult):
            return spec
        logs = LogCollector(self.limits.max_log_lines)

        def unwrap(result: FunctionResult) -> Any:
            if result.success:
                return result.value
            if result.has_error_data:
                raise ConvexError(result.error_data)
            raise RuntimeError(result.error_message)

        async def call_query(p: str, a: Any) -> Any:
            results, _ = await self.run_queries([(p, a)], identity, internal_ok=True)
            return unwrap(results[0])

        async def call_mutation(p: str, a: Any) -> Any:
            return unwrap(await self.run_mutation(p, a, identity, internal_ok=True))

        async def call_action(p: str, a: Any) -> Any:
            return unwrap(await self.run_action(p, a, identity, internal_ok=True))

        ctx = ActionCtx(identity, logs, call_query, call_mutation, call_action)
        ctx.scheduler = ActionScheduler(self.run_system, self._schedulable)
        try:
            kwargs = spec.validate_args(args)
            async with asyncio.timeout(self.limits.action_time_limit):
                value = await spec.handler(ctx, **kwargs)
        except TimeoutError:
            return FunctionResult.failure(
                f"Action timed out (limit {self.limits.action_time_limit:g}s)",
                logs.result(),
                self._ts,
            )
        except Exception as exc:
            return self._failed(exc, spec.path, logs)
        return self._finish(value, logs)

    # -- lifecycle ------------------------------------------------------------------------
    async def close(self) -> None:
        """Wait for pending commits, then close the persistence. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        self._remote = []
        self._remote_snapshot = None
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        while not self._flusher_idle():
            assert self._flusher is not None
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._unflushed:
            # The relaxed commits not yet written: one last flush (a failure is logged by
            # the persistence; those commits are then lost, as by a crash).
            self._flush_due = True
            self._wake_flusher()
            assert self._flusher is not None
            await asyncio.gather(self._flusher, return_exceptions=True)
        self._drop_subscriptions()
        self.offloop.close()
        await self.persistence.close()

    def _drop_subscriptions(self) -> None:
        if self._deferred_turn is not None:
            self._deferred_turn.cancel()
            self._deferred_turn = None
        self._deferred.clear()
        for query in self._queries.values():
            if query.rerun is not None:
                query.rerun.cancel()
                query.rerun = None
        self._queries.clear()
        self._subs = SubscriptionIndex()
