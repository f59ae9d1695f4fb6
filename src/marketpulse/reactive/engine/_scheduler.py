"""Scheduled functions: ``ctx.scheduler`` and the ``_scheduled_functions`` system table.

A job is a document of the system table ``_scheduled_functions``, with Convex's fields::

    {"name": "mod:fn", "args": [{...}], "scheduledTime": ms,
     "state": {"kind": "pending" | "inProgress" | "success" | "failed" | "canceled",
               "error"?: str},
     "completedTime"?: ms}

Scheduling is a write: from a mutation it goes into the mutation's own transaction, so a job
exists only if the mutation commits; from an action it is a small system mutation of its own.
The documents are stored like any other, so jobs survive restarts. Apps read them with
``ctx.db.system.query("_scheduled_functions")`` / ``ctx.db.system.get(id)``; only the
engine's own code writes them (user code gets "system table" errors).

Every state change is a *conditional* transition inside a transaction (``pending`` →
``inProgress``/``success``/``failed``/``canceled``, ``inProgress`` → ``success``/``failed``/
``canceled``): the transaction reads the job and changes it only from the expected state. The
engine runs mutations serially, and on a shared log (several nodes, PostgreSQL) a commit whose
reads went stale is re-executed on top of the winner's commit, where the state no longer
matches; so a job is claimed once whatever the number of runners.

Two more system tables serve the runners of a cluster (``_runner``, ``reactive/_cron_runner``):

* ``_scheduler_leases`` holds one ``{"node", "expiresAt"}`` per live runner. A claimed action
  records its runner's node in ``claimedBy`` (in the claim's own transaction); once that node's
  lease lapses, any runner marks the action failed, exactly once.
* ``_cron_jobs`` holds one ``{"name", "schedule", "nextRun", "jobId"}`` per declared cron job:
  the next occurrence is stored state, so the nodes of a cluster agree on it, and the node
  whose transaction advances ``nextRun`` is the one that schedules that occurrence.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..functions import FunctionSpec, canonical_path
from ..schema import BUILTIN_INDEXES, IndexDef
from ._transaction import Transaction

__all__ = [
    "BY_NEXT",
    "CRON_JOBS",
    "LEASES",
    "SCHEDULED_FUNCTIONS",
    "ActionScheduler",
    "Scheduler",
    "cancel_job",
    "finish_job",
    "insert_job",
    "now_ms",
    "system_tables",
]

SCHEDULED_FUNCTIONS = "_scheduled_functions"
"""The system table of scheduled jobs."""

BY_NEXT = "by_next"
"""Index of ``_scheduled_functions`` on ``state.kind``, then ``scheduledTime``: the runner
finds the next due pending job with one bisection."""

CRON_JOBS = "_cron_jobs"
"""The system table of the cron jobs' schedules (one document per job name)."""

LEASES = "_scheduler_leases"
"""The system table of the scheduler runners' leases (one document per node)."""

BY_NAME, BY_NODE = "by_name", "by_node"

PENDING, IN_PROGRESS = "pending", "inProgress"
SUCCESS, FAILED, CANCELED = "success", "failed", "canceled"


def system_tables() -> dict[str, dict[str, IndexDef]]:
    """The system tables and their indexes (built-in ones included)."""

    def table(name: str, *fields: str) -> dict[str, IndexDef]:
        defs = {d.name: d for d in BUILTIN_INDEXES}
        defs[name] = IndexDef(name, fields, (*fields, "_creationTime", "_id"))
        return defs

    return {
        SCHEDULED_FUNCTIONS: table(BY_NEXT, "state.kind", "scheduledTime"),
        CRON_JOBS: table(BY_NAME, "name"),
        LEASES: table(BY_NODE, "node"),
    }


def now_ms() -> float:
    """Wall-clock milliseconds, the unit of ``scheduledTime`` and ``completedTime``."""
    return time.time() * 1000.0


Resolve = Callable[[Any], str]
"""Turns what a caller names (a path, or a registered handler) into a schedulable path."""


def resolver(functions: Mapping[str, FunctionSpec]) -> Resolve:
    """A :data:`Resolve` over ``functions``: mutations and actions, internal ones included."""
    by_handler = {spec.handler: path for path, spec in functions.items()}

    def resolve(fn: Any) -> str:
        if isinstance(fn, str):
            path = canonical_path(fn)
        elif callable(fn) and fn in by_handler:
            path = by_handler[fn]
        else:
            raise ValueError(f"cannot schedule {fn!r}: pass a function path like 'mod:fn'")
        spec = functions.get(path)
        if spec is None:
            raise ValueError(f"cannot schedule {path!r}: no such function")
        if spec.kind == "query":
            raise ValueError(f"cannot schedule {path!r}: only mutations and actions run later")
        return path

    return resolve


def _when(timestamp: Any) -> float:
    if isinstance(timestamp, dt.datetime):
        if timestamp.tzinfo is None:
            raise ValueError("run_at: a datetime must be timezone-aware")
        return timestamp.timestamp() * 1000.0
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise ValueError(f"run_at: expected ms since the epoch, got {timestamp!r}")
    if not math.isfinite(timestamp):
        raise ValueError("run_at: the time must be finite")
    return float(timestamp)


def _delay_ms(seconds: Any) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"run_after: expected a delay in seconds, got {seconds!r}")
    if not math.isfinite(seconds):
        raise ValueError("run_after: the delay must be finite")
    return max(0.0, float(seconds)) * 1000.0


def _args(args: Any) -> dict[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise ValueError(f"scheduled function arguments must be an object, got {args!r}")
    return args


def insert_job(tx: Transaction, path: str, args: dict[str, Any], at_ms: float) -> str:
    """Write a pending job into ``tx``; returns its id."""
    return tx.insert(
        SCHEDULED_FUNCTIONS,
        {"name": path, "args": [args], "scheduledTime": at_ms, "state": {"kind": PENDING}},
        system=True,
    )


def job_state(tx: Transaction, job_id: str) -> str | None:
    """The state kind of a job, or ``None`` if ``job_id`` is not a job."""
    if tx.table_of(job_id) != SCHEDULED_FUNCTIONS:
        return None
    doc = tx.get(job_id)
    return doc["state"]["kind"] if doc is not None else None


def finish_job(
    tx: Transaction,
    job_id: str,
    expected: str,
    kind: str,
    error: str | None = None,
    *,
    node: str | None = None,
) -> bool:
    """Move a job from state ``expected`` to ``kind`` (``error`` for failures); False if it
    was not in ``expected`` (another runner, or a cancel, got there first). A claim
    (``kind`` ``inProgress``) records the claiming runner's ``node`` in ``claimedBy``."""
    if job_state(tx, job_id) != expected:
        return False
    state: dict[str, Any] = {"kind": kind}
    if error is not None:
        state["error"] = error
    fields: dict[str, Any] = {"state": state}
    if node is not None:
        fields["claimedBy"] = node
    if kind != IN_PROGRESS:
        fields["completedTime"] = now_ms()
    tx.patch(job_id, fields, system=True)
    return True


def cancel_job(tx: Transaction, job_id: Any) -> None:
    """Cancel a job that has not finished (a running action finishes, but is marked canceled).

    Raises:
        ValueError: ``job_id`` is not a scheduled job.
    """
    if not isinstance(job_id, str):
        raise ValueError(f"cancel: expected a scheduled function id, got {job_id!r}")
    state = job_state(tx, job_id)
    if state is None:
        raise ValueError(f"cancel: {job_id!r} is not a scheduled function")
    if state in (PENDING, IN_PROGRESS):
        finish_job(tx, job_id, state, CANCELED)


class Scheduler:
    """``ctx.scheduler`` in a mutation: jobs are written in the mutation's transaction, so
    they are scheduled only if it commits."""

    def __init__(self, tx: Transaction, resolve: Resolve) -> None:
        self._tx = tx
        self._resolve = resolve

    def run_after(self, seconds: float, fn: Any, args: dict[str, Any] | None = None) -> str:
        """Run mutation or action ``fn`` (a path, or its handler) ``seconds`` from now.

        Returns:
            The job's id in ``_scheduled_functions``.
        """
        return self._schedule(now_ms() + _delay_ms(seconds), fn, args)

    def run_at(
        self, timestamp_ms: float | dt.datetime, fn: Any, args: dict[str, Any] | None = None
    ) -> str:
        """Run ``fn`` at ``timestamp_ms`` (ms since the epoch, or an aware ``datetime``)."""
        return self._schedule(_when(timestamp_ms), fn, args)

    def cancel(self, job_id: str) -> None:
        """Cancel a job that has not run yet (no-op once it has finished)."""
        cancel_job(self._tx, job_id)

    def _schedule(self, at_ms: float, fn: Any, args: dict[str, Any] | None) -> str:
        self._tx.check()
        self._tx._require_writable()
        return insert_job(self._tx, self._resolve(fn), _args(args), at_ms)


SystemMutation = Callable[[Callable[[Transaction], Any]], Awaitable[Any]]
"""Runs ``body(tx)`` as a system mutation of its own and returns its value (or raises)."""


class ActionScheduler:
    """``ctx.scheduler`` in an action: each call is a system mutation of its own."""

    def __init__(self, run: SystemMutation, resolve: Resolve) -> None:
        self._run = run
        self._resolve = resolve

    async def run_after(self, seconds: float, fn: Any, args: dict[str, Any] | None = None) -> str:
        """Like :meth:`Scheduler.run_after`; committed when this returns."""
        at = now_ms() + _delay_ms(seconds)
        path, a = self._resolve(fn), _args(args)
        job_id: str = await self._run(lambda tx: insert_job(tx, path, a, at))
        return job_id

    async def run_at(
        self, timestamp_ms: float | dt.datetime, fn: Any, args: dict[str, Any] | None = None
    ) -> str:
        """Like :meth:`Scheduler.run_at`; committed when this returns."""
        at = _when(timestamp_ms)
        path, a = self._resolve(fn), _args(args)
        job_id: str = await self._run(lambda tx: insert_job(tx, path, a, at))
        return job_id

    async def cancel(self, job_id: str) -> None:
        """Like :meth:`Scheduler.cancel`; committed when this returns."""
        await self._run(lambda tx: cancel_job(tx, job_id))
