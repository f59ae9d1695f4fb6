"""Scheduled functions a functions module declares, as Convex's ``cronJobs()`` in convex/crons.ts.

A functions module exports a :class:`Crons` object at its top level; ``marketpulse serve``
finds it when it loads the module and runs each job on its schedule::

    from marketpulse.reactive import Crons

    crons = Crons()
    crons.interval("expire leases", {"seconds": 1}, "app:expireLeases")
    crons.cron("nightly cleanup", "0 3 * * *", "app:cleanup", {"olderThanMs": 86_400_000})

A job names a mutation (or an action), public or internal, by its path or by the decorated
function itself. Two kinds of schedule: an interval (``seconds``, ``minutes`` or ``hours``,
first run one interval after the job is first seen) and a standard five-field cron expression
in UTC (parsed by ``croniter``); and, beyond Convex, :meth:`Crons.at_start`, run once as the
store starts, before it accepts clients (in a cluster: as its first node starts). The runner
(``_cron_runner``) stores each job's next occurrence, so it runs once per occurrence however
many nodes share the store, with no user identity (as Convex runs crons), and never overlaps a
job with itself: a run that outlasts its period skips the runs it covered.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from croniter import CroniterBadDateError, croniter

__all__ = ["CronJob", "Crons"]

_NAME = re.compile(r"^[A-Za-z0-9_ .:/-]{1,100}$")
_UNITS = {"seconds": 1.0, "minutes": 60.0, "hours": 3600.0}


@dataclass(frozen=True)
class CronJob:
    """One scheduled job.

    Attributes:
        name: Unique within its :class:`Crons`.
        function: The function to run: a path (``module:name``) or the decorated function.
        args: Its arguments, the same on every run.
        every_s: The interval in seconds, for an interval job.
        expression: The five-field cron expression (UTC), for a cron job.
        at_start: Run once as the server starts, before it accepts clients (no schedule).
    """

    name: str
    function: str | Callable[..., Any]
    args: Mapping[str, Any] = field(default_factory=dict)
    every_s: float | None = None
    expression: str | None = None
    at_start: bool = False

    def next_after(self, now: float) -> float:
        """The first run strictly after ``now`` (epoch seconds) for a cron job, or one interval
        after ``now`` for an interval job."""
        if self.every_s is not None:
            return now + self.every_s
        assert self.expression is not None
        start = dt.datetime.fromtimestamp(now, tz=dt.UTC)
        nxt: float = croniter(self.expression, start).get_next(float)
        return nxt


class Crons:
    """The scheduled jobs of one functions module (``cronJobs()`` in Convex)."""

    def __init__(self) -> None:
        self._jobs: dict[str, CronJob] = {}

    def __iter__(self) -> Iterator[CronJob]:
        return iter(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)

    def _add(self, job: CronJob) -> CronJob:
        if not _NAME.match(job.name):
            raise ValueError(f"invalid cron job name {job.name!r}")
        if job.name in self._jobs:
            raise ValueError(f"cron job {job.name!r} is declared twice")
        if not isinstance(job.args, Mapping):
            raise TypeError(f"cron job {job.name!r}: args must be a mapping")
        self._jobs[job.name] = job
        return job

    def interval(
        self,
        name: str,
        schedule: Mapping[str, float],
        function: str | Callable[..., Any],
        args: Mapping[str, Any] | None = None,
    ) -> CronJob:
        """Run ``function`` every interval, e.g. ``{"seconds": 30}`` or ``{"minutes": 5}``.

        Raises:
            ValueError: An unknown unit, several units, or an interval not above zero.
        """
        if len(schedule) != 1 or next(iter(schedule)) not in _UNITS:
            raise ValueError(f"cron job {name!r}: give one of {sorted(_UNITS)}, got {schedule}")
        unit, count = next(iter(schedule.items()))
        every = float(count) * _UNITS[unit]
        if not every > 0:
            raise ValueError(f"cron job {name!r}: the interval must be above zero")
        return self._add(CronJob(name, function, dict(args or {}), every_s=every))

    def at_start(
        self,
        name: str,
        function: str | Callable[..., Any],
        args: Mapping[str, Any] | None = None,
    ) -> CronJob:
        """Run ``function`` once each time the store starts, before it accepts any client.

        Not in Convex (a Convex deployment does not restart under its data): here it lets an
        application reset state that must not survive a restart, such as leases. In a cluster
        the store starts with its first node: a node joining live ones skips these jobs, since
        the store under it did not restart and every other node's clients would see the reset.
        """
        return self._add(CronJob(name, function, dict(args or {}), at_start=True))

    def cron(
        self,
        name: str,
        expression: str,
        function: str | Callable[..., Any],
        args: Mapping[str, Any] | None = None,
    ) -> CronJob:
        """Run ``function`` on a standard five-field cron expression (UTC), e.g. ``*/5 * * * *``.

        Raises:
            ValueError: The expression is not a valid five-field cron expression.
        """
        if len(expression.split()) != 5 or not croniter.is_valid(expression):
            raise ValueError(f"cron job {name!r}: invalid cron expression {expression!r}")
        job = CronJob(name, function, dict(args or {}), expression=expression)
        try:
            job.next_after(time.time())
        except CroniterBadDateError:
            # Well-formed but matching no date (``0 0 30 2 *``): croniter's is_valid takes it,
            # and its runner could never schedule it.
            raise ValueError(
                f"cron job {name!r}: {expression!r} matches no date (e.g. February 30th)"
            ) from None
        return self._add(job)
