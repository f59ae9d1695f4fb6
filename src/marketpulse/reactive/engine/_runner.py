"""The runner of scheduled functions: wakes at the next due job and runs it once.

The runner sleeps until the earliest pending job's ``scheduledTime``, or until a commit writes
``_scheduled_functions`` (a table watch, so a job scheduled sooner wakes it): no polling. Each
turn claims at most ``max_jobs_per_turn`` due jobs, then yields to the event loop.

Every function the system runs by itself (a job, a cron occurrence, an at-start job) runs
through :func:`run_as_system`: no user identity (``ctx.auth.get_user_identity()`` is None, as
in Convex's scheduled functions and crons), internal functions allowed. Running a job:

* a **mutation** job runs in one transaction with its state change: the transaction first
  checks that the job is still ``pending``, runs the function, and marks the job ``success``,
  so the job's effects and its completion commit together, or not at all. If the function
  fails, a second transaction marks the job ``failed`` (again only from ``pending``).
* an **action** job is claimed first (``pending`` → ``inProgress`` in a transaction), then
  run, then marked ``success`` or ``failed`` (only from ``inProgress``: a cancel during the
  run wins). Actions run at most once: one whose runner died is marked ``failed`` (a
  transient error), never run again, as Convex does.

Each claim is a conditional state transition inside a transaction (see ``_scheduler``), so it
holds with several runners on a shared log. Which runner died is decided per node:

* one node (SQLite): every ``inProgress`` action at start was interrupted by the last stop;
* several nodes (a persistence with :class:`~marketpulse.reactive.persistence.NodeLiveness`,
  i.e. PostgreSQL): a claim records its node in ``claimedBy``. At start a node fails the
  actions its own name claimed (its previous process); every ``sweep_s`` it renews its lease
  (the ``nodes`` row) and fails the actions of nodes whose lease lapsed (``node_timeout_s``).
  The failing is a conditional transition, so exactly one node records it. An action still
  running on a node cut off from PostgreSQL for longer than its lease finishes, but its
  outcome is refused: it stays ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..functions import FunctionSpec
from ..persistence import NodeLiveness
from ._context import Identity, MutationCtx
from ._keys import TOP, encode_value
from ._results import FunctionResult
from ._scheduler import (
    BY_NEXT,
    FAILED,
    IN_PROGRESS,
    PENDING,
    SCHEDULED_FUNCTIONS,
    SUCCESS,
    finish_job,
    job_state,
    now_ms,
)
from ._transaction import Transaction

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["SchedulerRunner", "run_as_system"]

log = logging.getLogger("marketpulse.reactive.scheduler")

_INTERRUPTED = "Transient error while executing action: the store stopped while it ran"
_NODE_LOST = "Transient error while executing action: the node running it was lost"
_MAX_BACKOFF_S = 30.0
_SOLO = "local"


async def run_as_system(
    engine: Engine, path: str, args: dict[str, Any] | None = None
) -> FunctionResult:
    """Run mutation or action ``path`` now as the system: no user identity, internal functions
    allowed. The one way the store runs a function by itself (jobs, crons, at-start jobs)."""
    spec = engine.functions.get(path)
    if spec is not None and spec.kind == "action":
        return await engine.run_action(path, args or {}, Identity.anonymous(), internal_ok=True)
    return await engine.run_mutation(path, args or {}, Identity.anonymous(), internal_ok=True)


class SchedulerRunner:
    """Runs the jobs of ``_scheduled_functions`` when they are due.

    Args:
        engine: the engine whose jobs to run.
        max_jobs_per_turn: jobs claimed before yielding to the event loop.
        max_running_actions: action jobs running at once (a due action waits for a slot).
        sweep_s: seconds between two looks for the actions of lost nodes (several nodes only).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_jobs_per_turn: int = 64,
        max_running_actions: int = 16,
        sweep_s: float = 1.0,
    ) -> None:
        self.engine = engine
        persistence = engine.persistence
        self._liveness = persistence if isinstance(persistence, NodeLiveness) else None
        self.node = self._liveness.node if self._liveness is not None else _SOLO
        """The name this runner's claims record."""
        self.sweep_s = sweep_s
        self.recovered = 0
        """Actions of lost nodes this runner marked failed."""
        self.max_jobs_per_turn = max_jobs_per_turn
        self._slots = asyncio.Semaphore(max_running_actions)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._actions: set[asyncio.Task[None]] = set()
        self._unwatch: Any = None
        self._backoff = 0.0
        self.jobs_run = 0

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Mark actions interrupted by the last stop as failed, then start running jobs."""
        if self._task is not None:
            return
        node = self.node
        if self._liveness is None:
            await self.engine.run_system(lambda tx: _fail_actions(tx, lambda _: True))
        else:
            # This node's lease exists before it claims anything, so no other node takes
            # its first claims for a dead node's.
            await self._liveness.live_nodes()
            await self.engine.run_system(lambda tx: _fail_actions(tx, lambda by: by == node))
        self._unwatch = self.engine.watch_table(SCHEDULED_FUNCTIONS, self._wake.set)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._loop())
        if self._liveness is not None:
            self._sweeper = loop.create_task(self._sweep_forever(self._liveness))

    async def stop(self) -> None:
        """Stop claiming jobs and cancel running actions (they stay ``inProgress`` and are
        marked failed on the next start). Idempotent."""
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        tasks = [t for t in (self._task, self._sweeper, *self._actions) if t is not None]
        self._task = self._sweeper = None
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the system entry point -----------------------------------------------------------
    async def run_function(self, path: str, args: dict[str, Any] | None = None) -> FunctionResult:
        """:func:`run_as_system` on this runner's engine."""
        return await run_as_system(self.engine, path, args)

    # -- lost nodes -----------------------------------------------------------------------
    async def _sweep_forever(self, liveness: NodeLiveness) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            try:
                await self._sweep(liveness)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: try again next time
                log.warning("scheduler lease sweep failed: %s", exc)

    async def _sweep(self, liveness: NodeLiveness) -> None:
        live = await liveness.live_nodes()
        # Read from memory first: a commit only when a lost node holds an action.
        tx = Transaction(self.engine._store, writable=False, deadline=None)
        suspects = {j["_id"]: j.get("claimedBy") for j in _in_progress(tx)}
        suspects = {job_id: by for job_id, by in suspects.items() if by not in live}
        if not suspects:
            return
        # Asked again: a claim seen above was committed after its node's lease was renewed, so
        # a node that started between the first answer and its claim is live now.
        live = await liveness.live_nodes()
        lost = [job_id for job_id, by in suspects.items() if by not in live]
        if lost:
            self.recovered += await self.engine.run_system(
                lambda tx: _fail_jobs(tx, lost, _NODE_LOST)
            )

    # -- the loop -------------------------------------------------------------------------
    def _due(self, now: float) -> tuple[list[dict[str, Any]], float | None]:
        """Up to ``max_jobs_per_turn`` due pending jobs, and when the next one is due.

        While every action slot is taken, due actions are passed over (they stay pending, and
        a slot's release wakes the runner): the jobs behind them, mutations above all, must
        not wait for an action to end."""
        slots_free = not self._slots.locked()
        tx = Transaction(self.engine._store, writable=False, deadline=None)
        prefix = encode_value(PENDING)
        scan = tx.scan(SCHEDULED_FUNCTIONS, BY_NEXT, prefix, prefix + TOP, False)
        due: list[dict[str, Any]] = []
        later: float | None = None
        try:
            for _, job in scan:
                if job["scheduledTime"] > now:
                    later = float(job["scheduledTime"])
                    break
                if not slots_free and self._is_action(job["name"]):
                    continue
                due.append(job)
                if len(due) >= self.max_jobs_per_turn:
                    later = now
                    break
        finally:
            scan.finish()
        return due, later

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            due, later = self._due(now_ms())
            progress = False
            for job in due:
                progress = await self._start(job) or progress
            if due and not progress:
                # Every claim failed to commit (a failing disk): back off, do not spin.
                self._backoff = min(_MAX_BACKOFF_S, max(0.1, self._backoff * 2))
                later = now_ms() + self._backoff * 1000.0
            elif progress:
                self._backoff = 0.0
            if due and later is not None and later <= now_ms():
                await asyncio.sleep(0)  # bounded work per turn: let the loop breathe
                continue
            timeout = None if later is None else max(0.0, (later - now_ms()) / 1000.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def _is_action(self, path: str) -> bool:
        spec = self.engine.functions.get(path)
        return spec is not None and spec.kind == "action"

    async def _start(self, job: dict[str, Any]) -> bool:
        """Run (mutation) or launch (action) one job; False if its claim could not commit."""
        job_id, path = job["_id"], job["name"]
        args = job["args"][0] if job.get("args") else {}
        spec = self.engine.functions.get(path)
        try:
            if spec is None or spec.kind == "query":
                await self._finish(job_id, PENDING, FAILED, f"Could not find function '{path}'")
                return True
            if spec.kind == "mutation":
                await self._run_mutation_job(job_id, spec, args)
                return True
            if self._slots.locked():
                return True  # taken by jobs earlier in this turn: it waits, still pending
            await self._slots.acquire()  # free: at once
            try:
                node = self.node
                claimed = await self.engine.run_system(
                    lambda tx: finish_job(tx, job_id, PENDING, IN_PROGRESS, node=node)
                )
            except BaseException:
                self._slots.release()
                raise
            if not claimed:
                self._slots.release()
                return True
            task = asyncio.get_running_loop().create_task(self._run_action_job(job_id, path, args))
            self._actions.add(task)
            task.add_done_callback(self._actions.discard)
            return True
        except RuntimeError:
            log.exception("scheduled job %s (%s) could not be committed", job_id, path)
            return False

    async def _run_mutation_job(self, job_id: str, spec: FunctionSpec, args: Any) -> None:
        gone = False

        def run(ctx: MutationCtx, **kwargs: Any) -> Any:
            nonlocal gone
            tx = ctx.db._tx
            # Checked in the transaction itself: a mutation re-executed after another node's
            # commit sees the job that node claimed, and does nothing.
            gone = job_state(tx, job_id) != PENDING
            if gone:
                return None
            value = spec.handler(ctx, **kwargs)
            finish_job(tx, job_id, PENDING, SUCCESS)
            return value

        wrapped = dataclasses.replace(spec, handler=run)
        result = await self.engine.run_mutation_spec(wrapped, args, Identity.anonymous())
        if result.success:
            self.jobs_run += 0 if gone else 1
            return
        if (result.error_message or "").startswith("Mutation could not be committed"):
            raise RuntimeError(result.error_message)
        if not gone:
            await self._finish(job_id, PENDING, FAILED, result.error_message or "failed")

    async def _run_action_job(self, job_id: str, path: str, args: Any) -> None:
        try:
            result = await run_as_system(self.engine, path, args)
            self.jobs_run += 1
            if result.success:
                await self._finish(job_id, IN_PROGRESS, SUCCESS)
            else:
                await self._finish(job_id, IN_PROGRESS, FAILED, result.error_message or "failed")
        except RuntimeError:
            log.exception(
                "scheduled action %s (%s): its outcome could not be recorded", job_id, path
            )
        finally:
            self._slots.release()
            self._wake.set()  # actions passed over for want of a slot may start now

    async def _finish(
        self, job_id: str, expected: str, kind: str, error: str | None = None
    ) -> None:
        await self.engine.run_system(lambda tx: finish_job(tx, job_id, expected, kind, error))


def _in_progress(tx: Transaction) -> list[dict[str, Any]]:
    prefix = encode_value(IN_PROGRESS)
    scan = tx.scan(SCHEDULED_FUNCTIONS, BY_NEXT, prefix, prefix + TOP, False)
    try:
        return [job for _, job in scan]
    finally:
        scan.finish()


def _fail_jobs(tx: Transaction, job_ids: list[str], error: str) -> int:
    """Mark failed those of ``job_ids`` still ``inProgress``; how many."""
    return sum(finish_job(tx, job_id, IN_PROGRESS, FAILED, error) for job_id in job_ids)


def _fail_actions(
    tx: Transaction, lost: Callable[[str | None], bool], error: str = _INTERRUPTED
) -> int:
    """Mark failed the ``inProgress`` actions whose claiming node is ``lost``; how many."""
    return _fail_jobs(tx, [j["_id"] for j in _in_progress(tx) if lost(j.get("claimedBy"))], error)
