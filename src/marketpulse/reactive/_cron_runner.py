"""Runs the :class:`~marketpulse.reactive.crons.Crons` jobs of the served modules on schedule.

An occurrence is not run here: it is scheduled, as a job of ``_scheduled_functions`` that the
scheduler runner runs like any other (``engine/_runner``: as the system, with no user identity,
as Convex runs crons). The schedule is stored in the ``_cron_jobs`` system table, one document
per job name with its next occurrence (``nextRun``) and the job of the last one (``jobId``).
Every node runs a :class:`CronRunner`; at an occurrence each one runs the same small system
transaction, which schedules the job and advances ``nextRun`` only if ``nextRun`` is still due.
Transactions are serializable across the nodes sharing a log, so exactly one node schedules
each occurrence, and the scheduler's claims run it once.

A job never overlaps itself: while the last occurrence's job is pending or running, the
occurrences it covers are skipped (as Convex's scheduler does), never caught up in a burst.
Only the last occurrence's job is kept in ``_scheduled_functions``: scheduling the next one
deletes the previous one, after its failure, if any, was logged (once, then at most once per
``log_every`` seconds with the count of failures in between). ``at_start`` jobs run as the store
starts (again while one answers ``{"more": true}``: one mutation's time limit each run),
through the same :func:`~marketpulse.reactive.engine._runner.run_as_system`: on a single
node at every start; in a cluster (a persistence with ``NodeLiveness``) only on a node that finds
no other node live, since a node joining a live cluster did not restart the store under it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, cast

import structlog

from marketpulse._aio import cancel_and_wait
from marketpulse.reactive.crons import CronJob, Crons
from marketpulse.reactive.engine._keys import TOP, encode_value
from marketpulse.reactive.engine._runner import run_as_system
from marketpulse.reactive.engine._scheduler import (
    BY_NAME,
    CRON_JOBS,
    FAILED,
    IN_PROGRESS,
    PENDING,
    insert_job,
)
from marketpulse.reactive.engine._transaction import Transaction
from marketpulse.reactive.functions import Durability, FunctionSpec, canonical_path
from marketpulse.reactive.persistence import NodeLiveness

__all__ = ["CronRunner"]

log = structlog.get_logger("marketpulse.crons")

_MAX_STARTUP_RUNS = 10_000
"""Most runs of one at-start job that keeps answering ``{"more": true}`` (a bound, not a
budget: a job that never finishes must not keep the store from serving)."""


class _Engine(Protocol):
    @property
    def functions(self) -> Any: ...

    async def run_system(
        self, body: Callable[[Transaction], Any], *, durability: Durability = ...
    ) -> Any: ...

    async def run_mutation(
        self, path: str, args: Any, identity: Any = ..., *, internal_ok: bool = ...
    ) -> Any: ...

    async def run_action(
        self, path: str, args: Any, identity: Any = ..., *, internal_ok: bool = ...
    ) -> Any: ...


def _schedule_of(job: CronJob, path: str) -> str:
    """What identifies a job's schedule: a changed declaration starts the schedule afresh."""
    when = f"every {job.every_s!r} s" if job.every_s is not None else f"cron {job.expression}"
    return f"{when} -> {path} {sorted(job.args.items())!r}"


def _cron_doc(tx: Transaction, name: str) -> dict[str, Any] | None:
    key = encode_value(name)
    return tx.first(CRON_JOBS, BY_NAME, key, key + TOP, False)


def _tick(tx: Transaction, job: CronJob, path: str, now: float) -> tuple[float, bool, str | None]:
    """One look at job ``job`` at ``now`` (epoch seconds), in a system transaction.

    Schedules the due occurrence (unless the last one is still under way) and advances the
    stored ``nextRun``. Returns the next occurrence (epoch seconds), whether this call
    scheduled a job, and the error of the last occurrence's job if it failed.
    """
    schedule = _schedule_of(job, path)
    doc = _cron_doc(tx, job.name)
    if doc is None or doc["schedule"] != schedule:
        first = job.next_after(now)
        start: dict[str, Any] = {"schedule": schedule, "nextRun": first * 1000.0}
        if doc is None:
            tx.insert(CRON_JOBS, {"name": job.name, "jobId": None, **start}, system=True)
        else:
            tx.patch(doc["_id"], start, system=True)
        return first, False, None
    due = doc["nextRun"] / 1000.0
    if due > now:
        return due, False, None  # not yet, or another node scheduled it already
    following = job.next_after(due)
    if following <= now:
        following = job.next_after(now)  # skip the occurrences already past
    last = tx.get(doc["jobId"]) if doc["jobId"] is not None else None
    fields: dict[str, Any] = {"nextRun": following * 1000.0}
    error: str | None = None
    scheduled = False
    if last is None or last["state"]["kind"] not in (PENDING, IN_PROGRESS):
        if last is not None:
            if last["state"]["kind"] == FAILED:
                error = str(last["state"].get("error", "failed"))
            tx.delete(last["_id"], system=True)
        fields["jobId"] = insert_job(tx, path, dict(job.args), due * 1000.0)
        scheduled = True
    tx.patch(doc["_id"], fields, system=True)
    return following, scheduled, error


class CronRunner:
    """Runs every job of ``crons`` against ``engine`` until stopped.

    Args:
        engine: The engine whose functions the jobs name.
        crons: The :class:`Crons` objects of the served modules.
        clock: Wall clock, epoch seconds (cron expressions are wall-clock times).
        log_every: Seconds between two log lines about the same failing job.
        liveness: The nodes sharing the store, in a cluster (``at_start`` jobs run only on a
            node that finds no other live).

    Raises:
        ValueError: A job names a function that is not served, or a query; or two jobs share
            a name.
    """

    def __init__(
        self,
        engine: _Engine,
        crons: Iterable[Crons],
        *,
        clock: Callable[[], float] = time.time,
        log_every: float = 60.0,
        liveness: NodeLiveness | None = None,
    ) -> None:
        self._engine = engine
        self._liveness = liveness
        self._clock = clock
        self._log_every = log_every
        self._jobs: list[tuple[CronJob, FunctionSpec]] = []
        names: set[str] = set()
        for group in crons:
            for job in group:
                if job.name in names:
                    raise ValueError(f"cron job {job.name!r} is declared twice")
                names.add(job.name)
                self._jobs.append((job, self._resolve(job)))
        self._tasks: list[asyncio.Task[None]] = []
        self._failures: dict[str, tuple[float, int]] = {}
        self.runs: dict[str, int] = {job.name: 0 for job, _ in self._jobs}
        """Occurrences this runner scheduled (or at-start runs it ran), per job name."""

    def _resolve(self, job: CronJob) -> FunctionSpec:
        functions = self._engine.functions
        spec: FunctionSpec | None
        if isinstance(job.function, str):
            spec = functions.get(canonical_path(job.function))
        else:
            spec = next((s for s in functions.values() if s.handler is job.function), None)
        if spec is None:
            raise ValueError(f"cron job {job.name!r}: {job.function!r} is not a served function")
        if spec.kind == "query":
            raise ValueError(f"cron job {job.name!r}: {spec.path} is a query; schedule a mutation")
        return spec

    @property
    def jobs(self) -> list[CronJob]:
        """Every job, in declaration order."""
        return [job for job, _ in self._jobs]

    async def run_startup(self) -> None:
        """Run the ``at_start`` jobs once, in order (call before accepting clients); in a
        cluster, only when no other node is live."""
        starting = [(job, spec) for job, spec in self._jobs if job.at_start]
        if starting and self._liveness is not None:
            others = await self._liveness.live_nodes() - {self._liveness.node}
            if others:
                log.info(
                    "joining a live cluster: at-start jobs not run",
                    jobs=[job.name for job, _ in starting],
                    live_nodes=sorted(others),
                )
                return
        for job, spec in starting:
            for _ in range(_MAX_STARTUP_RUNS):
                try:
                    result = await run_as_system(cast(Any, self._engine), spec.path, dict(job.args))
                    error = None if result.success else result.error_message
                except Exception as exc:  # the server goes on; the job runs at the next start
                    result, error = None, f"{type(exc).__name__}: {exc}"
                self.runs[job.name] += 1
                self._outcome(job, spec, error)
                # A job with more than one mutation's worth of work answers {"more": true}
                # and runs again, each run in its own mutation and time limit.
                value = result.value if result is not None and error is None else None
                if not (isinstance(value, dict) and value.get("more") is True):
                    break

    def start(self) -> None:
        """Start the scheduled jobs."""
        for job, spec in self._jobs:
            if not job.at_start:
                self._tasks.append(asyncio.create_task(self._loop(job, spec), name=job.name))

    async def stop(self) -> None:
        """Stop every job (an occurrence already scheduled still runs)."""
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(*tasks)

    async def _loop(self, job: CronJob, spec: FunctionSpec) -> None:
        due = self._clock()
        while True:
            await asyncio.sleep(max(0.0, due - self._clock()))
            now = self._clock()
            try:
                # Relaxed: a tick lost in a crash (with the job it scheduled, in the same
                # commit) is taken again at the next start, its occurrence still due; and a
                # job's own commit makes it durable first (commits are written in order). A
                # durable tick would make every later commit wait for its write, each second,
                # however slow the disk.
                due, scheduled, error = await self._engine.run_system(
                    functools.partial(_tick, job=job, path=spec.path, now=now),
                    durability="relaxed",
                )
            except Exception as exc:  # e.g. the database is away: look again one period on
                log.warning("cron job could not be scheduled", job=job.name, error=str(exc)[:500])
                try:
                    due = job.next_after(now)
                except Exception:  # never expected (Crons refuses such jobs): not silently
                    log.exception("cron job has no next run: stopped", job=job.name)
                    return
                continue
            if scheduled:
                self.runs[job.name] += 1
            if scheduled or error is not None:
                self._outcome(job, spec, error)

    def _outcome(self, job: CronJob, spec: FunctionSpec, error: str | None) -> None:
        if error is None:
            if job.name in self._failures:
                _, missed = self._failures.pop(job.name)
                log.info("cron job recovered", job=job.name, failures=missed)
            return
        now = time.monotonic()
        last, count = self._failures.get(job.name, (float("-inf"), 0))
        if now - last >= self._log_every:
            log.warning(
                "cron job failed",
                job=job.name,
                function=spec.path,
                error=error[:500],
                failures_since_last_log=count + 1,
            )
            self._failures[job.name] = (now, 0)
        else:
            self._failures[job.name] = (last, count + 1)
