"""A functions module for the crash test of relaxed durability (``tests/e2e/test_durability``).

Module name ``seq``: every write, relaxed or durable, takes the next number of one global
sequence (``head``) and stores a row with it, in one commit. Commits are serial, so the numbers
follow the commit order: a recovered store holding a prefix of that order holds exactly the
rows ``1..head``, and a torn or reordered one shows a gap or a row past ``head``.
"""

from __future__ import annotations

from typing import Any

from marketpulse.reactive import FunctionModule, MutationCtx, QueryCtx, Schema, Table

schema = Schema({"rows": Table(indexes={"by_n": ["n"]}), "head": Table()})
seq = FunctionModule("seq", schema=schema)


def _next(ctx: MutationCtx, kind: str, writer: str) -> int:
    head: dict[str, Any] | None = ctx.db.query("head").first()
    n = int(head["n"]) + 1 if head is not None else 1
    if head is None:
        ctx.db.insert("head", {"n": n})
    else:
        ctx.db.patch(head["_id"], {"n": n})
    ctx.db.insert("rows", {"n": n, "kind": kind, "writer": writer})
    return n


@seq.mutation(durability="relaxed")
def relaxed(ctx: MutationCtx, writer: str) -> int:
    return _next(ctx, "relaxed", writer)


@seq.mutation
def durable(ctx: MutationCtx, writer: str) -> int:
    return _next(ctx, "durable", writer)


@seq.query
def state(ctx: QueryCtx) -> dict[str, Any]:
    head = ctx.db.query("head").first()
    rows = ctx.db.query("rows").with_index("by_n").collect()
    return {"head": int(head["n"]) if head else 0, "rows": [int(r["n"]) for r in rows]}
