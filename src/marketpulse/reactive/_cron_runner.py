"""Runs the :class:`~marketpulse.reactive.crons.Crons` jobs of the served modules on schedule.

One task per scheduled job; each run awaits the function before the next run is planned, so a
job never overlaps itself (a run that outlasts its period skips the runs it covered, as
Convex's scheduler does). Jobs run as admin, so internal functions may be scheduled. A failing
job is logged once, then at most once per ``log_every`` seconds with the count of failures in
between: a job failing every second does not flood the log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import structlog

from marketpulse._aio import cancel_and_wait
from marketpulse.reactive.crons import CronJob, Crons
from marketpulse.reactive.engine import Identity
from marketpulse.reactive.functions import FunctionSpec, canonical_path

__all__ = ["CronRunner"]

log = structlog.get_logger("marketpulse.crons")


class _Engine(Protocol):
    @property
    def functions(self) -> Any: ...

    async def run_mutation(
        self, path: str, args: Any, identity: Identity | None = ..., *, internal_ok: bool = ...
    ) -> Any: ...

    async def run_action(
        self, path: str, args: Any, identity: Identity | None = ..., *, internal_ok: bool = ...
    ) -> Any: ...


class CronRunner:
    """Runs every job of ``crons`` against ``engine`` until stopped.

    Args:
        engine: The engine whose functions the jobs name.
        crons: The :class:`Crons` objects of the served modules.
        clock: Wall clock, epoch seconds (cron expressions are wall-clock times).
        log_every: Seconds between two log lines about the same failing job.

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
    ) -> None:
        self._engine = engine
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
        """Completed runs per job name (successful or not)."""

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
        """Run the ``at_start`` jobs once, in order (call before accepting clients)."""
        for job, spec in self._jobs:
            if job.at_start:
                await self._run(job, spec)

    def start(self) -> None:
        """Start the scheduled jobs."""
        for job, spec in self._jobs:
            if not job.at_start:
                self._tasks.append(asyncio.create_task(self._loop(job, spec), name=job.name))

    async def stop(self) -> None:
        """Stop every job (a run under way is cancelled with it)."""
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(*tasks)

    async def _loop(self, job: CronJob, spec: FunctionSpec) -> None:
        due = job.next_after(self._clock())
        while True:
            await asyncio.sleep(max(0.0, due - self._clock()))
            await self._run(job, spec)
            now = self._clock()
            # From the planned time, so an interval does not drift by each run's length; runs
            # the last one outlasted are skipped, never caught up in a burst.
            due = job.next_after(due)
            if due <= now:
                due = job.next_after(now)

    async def _run(self, job: CronJob, spec: FunctionSpec) -> None:
        run = self._engine.run_action if spec.kind == "action" else self._engine.run_mutation
        try:
            result = await run(spec.path, dict(job.args), Identity.admin(), internal_ok=True)
            error = None if result.success else result.error_message
        except Exception as exc:  # the job runs again next time; the server goes on
            error = f"{type(exc).__name__}: {exc}"
        self.runs[job.name] += 1
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
