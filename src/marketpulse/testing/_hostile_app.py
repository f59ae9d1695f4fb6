"""The functions a hostile-client run serves: a stamp the bystander watches, a slow query.

Served by :class:`~marketpulse.testing._hostile.HostileRun`'s store (``functions=
"marketpulse.testing._hostile_app"``): the writer stores a wall-clock stamp, the bystander's
official client is pushed it, and the difference is the push latency everyone else sees.
"""

from __future__ import annotations

import time
from typing import Any

from marketpulse.reactive import FunctionModule, MutationCtx, QueryCtx, Schema, Table

hostile = FunctionModule("hostile", schema=Schema({"stamps": Table(indexes={"by_name": ["name"]})}))


def _stamp(ctx: QueryCtx, name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = (
        ctx.db.query("stamps").with_index("by_name", lambda q: q.eq("name", name)).unique()
    )
    return found


@hostile.query
def latest(ctx: QueryCtx, name: str) -> float:
    doc = _stamp(ctx, name)
    return float(doc["at"]) if doc else 0.0


@hostile.mutation
def stamp(ctx: MutationCtx, name: str, at: float) -> None:
    doc = _stamp(ctx, name)
    if doc is None:
        ctx.db.insert("stamps", {"name": name, "at": at})
    else:
        ctx.db.patch(doc["_id"], {"at": at})


def _spin(seconds: float) -> float:
    """Pure CPU for ``seconds`` (capped under the run-time limit): the kind of query a client can
    legally send. At least 10 ms of this thread's CPU too, which is how the server tells a slow
    query (a loaded machine lends a spinning thread only part of the wall-clock time)."""
    seconds = min(seconds, 0.9)
    end = time.perf_counter() + seconds
    cpu_end = time.thread_time() + min(seconds, 0.01)
    n = 0
    while time.perf_counter() < end or time.thread_time() < cpu_end:
        n += 1
    return float(n)


@hostile.query
def slow(ctx: QueryCtx, seconds: float) -> float:
    return _spin(seconds)


@hostile.query
def slow_latest(ctx: QueryCtx, name: str, seconds: float) -> list[float]:
    """A stamp, then ``seconds`` of CPU: a slow query that every commit of the stamp re-runs."""
    doc = _stamp(ctx, name)
    return [float(doc["at"]) if doc else 0.0, _spin(seconds)]
