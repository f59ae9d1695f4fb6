"""A functions module with crons, served by ``marketpulse serve`` in tests/reactive/test_crons.py."""

from __future__ import annotations

from typing import Any

from marketpulse.reactive import Crons, FunctionModule, MutationCtx, QueryCtx

ticks = FunctionModule("ticks")


def _bump(ctx: MutationCtx, name: str) -> None:
    doc = ctx.db.query("counters").filter(lambda d: d["name"] == name).first()
    if doc is None:
        ctx.db.insert("counters", {"name": name, "n": 1})
    else:
        ctx.db.patch(doc["_id"], {"n": doc["n"] + 1})


@ticks.internal_mutation
def tick(ctx: MutationCtx, name: str) -> None:
    """Count one run of the job ``name``."""
    _bump(ctx, name)


@ticks.query
def counts(ctx: QueryCtx) -> dict[str, Any]:
    """Runs per job."""
    return {d["name"]: d["n"] for d in ctx.db.query("counters").collect()}


crons = Crons()
crons.at_start("started", tick, {"name": "start"})
crons.interval("fast", {"seconds": 0.2}, "ticks:tick", {"name": "fast"})
crons.cron("every minute", "* * * * *", tick, {"name": "minute"})
