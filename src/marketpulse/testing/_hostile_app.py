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


@hostile.query
def slow(ctx: QueryCtx, seconds: float) -> float:
    # Pure CPU, under the run-time limit: the kind of query a client can legally send.
    end = time.perf_counter() + min(seconds, 0.9)
    n = 0
    while time.perf_counter() < end:
        n += 1
    return float(n)
