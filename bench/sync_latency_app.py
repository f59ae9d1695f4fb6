"""Functions served by bench/sync_latency.py: one document rewritten per round."""

from __future__ import annotations

import time
from typing import Any

from marketpulse.reactive import FunctionModule, MutationCtx, QueryCtx, Schema, Table

bench = FunctionModule("bench", schema=Schema({"stamps": Table(indexes={"by_key": ["key"]})}))


@bench.query
def latest(ctx: QueryCtx) -> dict[str, Any] | None:
    doc: dict[str, Any] | None = (
        ctx.db.query("stamps").with_index("by_key", lambda q: q.eq("key", "k")).unique()
    )
    return {"seq": doc["seq"], "stampNs": doc["stampNs"]} if doc else None


@bench.mutation
def stamp(ctx: MutationCtx, seq: int) -> int:
    # Wall-clock stamp taken inside the mutation, just before its commit: the latency measured
    # from it includes the commit (and its fsync), so it bounds commit-to-receipt from above.
    # A string, so the nanoseconds survive the float64 JSON number.
    now = str(time.time_ns())
    doc = ctx.db.query("stamps").with_index("by_key", lambda q: q.eq("key", "k")).unique()
    if doc is None:
        ctx.db.insert("stamps", {"key": "k", "seq": seq, "stampNs": now})
    else:
        ctx.db.patch(doc["_id"], {"seq": seq, "stampNs": now})
    return seq


@bench.mutation
def stampMany(ctx: MutationCtx, seq: int, markets: int) -> int:
    """One batch of a fast feed: the latest update of ``markets`` markets (one document each,
    rewritten), as the pipeline writes a batch of order book changes."""
    for m in range(markets):
        key = f"m{m}"
        doc = ctx.db.query("stamps").with_index("by_key", lambda q, k=key: q.eq("key", k)).unique()
        if doc is None:
            ctx.db.insert("stamps", {"key": key, "seq": seq, "stampNs": ""})
        else:
            ctx.db.patch(doc["_id"], {"seq": seq})
    return seq
