"""A functions module with crons, served by ``marketpulse serve`` in tests/reactive/test_crons.py."""

from __future__ import annotations

import asyncio
from typing import Any

from marketpulse.reactive import ActionCtx, Crons, FunctionModule, MutationCtx, QueryCtx

ticks = FunctionModule("ticks")

slow_runs: dict[str, int] = {"running": 0, "overlaps": 0, "runs": 0}
"""What the ``slow`` action saw (the runner tests run it in their own process)."""


@ticks.internal_mutation
def tick(ctx: MutationCtx, name: str) -> None:
    """Count one run of the job ``name``."""
    doc = ctx.db.query("counters").filter(lambda d: d["name"] == name).first()
    if doc is None:
        ctx.db.insert("counters", {"name": name, "n": 1})
    else:
        ctx.db.patch(doc["_id"], {"n": doc["n"] + 1})


@ticks.internal_mutation
def tick_until(ctx: MutationCtx, name: str, runs: int) -> dict[str, Any]:
    """:func:`tick`, answering ``more`` until ``name`` has run ``runs`` times."""
    tick(ctx, name)
    doc = ctx.db.query("counters").filter(lambda d: d["name"] == name).first()
    return {"more": doc is not None and doc["n"] < runs}


@ticks.internal_mutation(durability="relaxed")
def relaxed_tick(ctx: MutationCtx, name: str) -> None:
    """:func:`tick`, answered before its write (market data's cron is so)."""
    tick(ctx, name)


@ticks.internal_mutation
def fail(ctx: MutationCtx) -> None:
    """Always fails."""
    raise RuntimeError("this job always fails")


@ticks.internal_action
async def slow(ctx: ActionCtx) -> None:
    """Takes 0.25 s, and counts whether another run of it was under way."""
    slow_runs["running"] += 1
    if slow_runs["running"] > 1:
        slow_runs["overlaps"] += 1
    await asyncio.sleep(0.25)
    slow_runs["running"] -= 1
    slow_runs["runs"] += 1


@ticks.query
def counts(ctx: QueryCtx) -> dict[str, Any]:
    """Runs per job."""
    return {d["name"]: d["n"] for d in ctx.db.query("counters").collect()}


@ticks.query
def system(ctx: QueryCtx, table: str) -> list[dict[str, Any]]:
    """Every document of a system table."""
    docs: list[dict[str, Any]] = ctx.db.system.query(table).collect()
    return docs


crons = Crons()
crons.at_start("started", tick, {"name": "start"})
crons.interval("fast", {"seconds": 0.2}, "ticks:tick", {"name": "fast"})
crons.cron("every minute", "* * * * *", tick, {"name": "minute"})
