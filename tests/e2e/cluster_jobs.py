"""Functions served by the scheduler-in-a-cluster test (tests/e2e/test_scheduler_cluster.py):
a cron that records which occurrence it runs, and a long action to kill a node under."""

from __future__ import annotations

import asyncio
from typing import Any

from marketpulse.reactive import ActionCtx, Crons, FunctionModule, MutationCtx, QueryCtx

jobs = FunctionModule("jobs")

TICK = "jobs:tick"


@jobs.internal_mutation
def tick(ctx: MutationCtx) -> None:
    """Record the occurrence being run: the ``scheduledTime`` of this cron's pending job (a
    mutation job is still ``pending`` inside its own transaction)."""
    mine = [
        d
        for d in ctx.db.system.query("_scheduled_functions").collect()
        if d["name"] == TICK and d["state"]["kind"] == "pending"
    ]
    ctx.db.insert(
        "ticks",
        {"occurrences": [d["scheduledTime"] for d in mine], "node_seen": len(mine)},
    )


@jobs.internal_mutation
def started(ctx: MutationCtx, name: str) -> None:
    ctx.db.insert("holds", {"name": name})


@jobs.internal_action
async def hold(ctx: ActionCtx, name: str, seconds: float) -> None:
    """Record that it started, then take ``seconds``."""
    await ctx.run_mutation("jobs:started", {"name": name})
    await asyncio.sleep(seconds)


@jobs.mutation
def scheduleHold(ctx: MutationCtx, name: str, seconds: float) -> str:
    job_id: str = ctx.scheduler.run_after(0, "jobs:hold", {"name": name, "seconds": seconds})
    return job_id


@jobs.internal_mutation
def boot(ctx: MutationCtx) -> None:
    """An at-start job: one document per run."""
    ctx.db.insert("boots", {})


@jobs.query
def boots(ctx: QueryCtx) -> int:
    return len(ctx.db.query("boots").collect())


@jobs.query
def ticks(ctx: QueryCtx) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = ctx.db.query("ticks").collect()
    return docs


@jobs.query
def holds(ctx: QueryCtx, name: str) -> int:
    return len([d for d in ctx.db.query("holds").collect() if d["name"] == name])


@jobs.query
def job(ctx: QueryCtx, id: str) -> dict[str, Any] | None:
    doc: dict[str, Any] | None = ctx.db.system.get(id)
    return doc


crons = Crons()
crons.interval("cluster tick", {"seconds": 1}, tick)
crons.at_start("cluster boot", boot)
