"""A small functions module that is not market data, served by the e2e tests.

Module name ``counter``: named counters, plus functions that fail, run too long or return too
much, to exercise the store's error paths.
"""

from __future__ import annotations

from typing import Any

from marketpulse.reactive import ConvexError, FunctionModule, MutationCtx, QueryCtx, Schema, Table

schema = Schema({"counters": Table(indexes={"by_name": ["name"]})})
counter = FunctionModule("counter", schema=schema)


def _doc(ctx: QueryCtx, name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = (
        ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).unique()
    )
    return found


@counter.query
def get(ctx: QueryCtx, name: str) -> float:
    doc = _doc(ctx, name)
    return float(doc["value"]) if doc else 0.0


@counter.query
def listAll(ctx: QueryCtx) -> list[dict[str, Any]]:
    return [
        {"name": d["name"], "value": d["value"]}
        for d in ctx.db.query("counters").with_index("by_name").collect()
    ]


def _add(ctx: MutationCtx, name: str, by: float) -> float:
    doc = _doc(ctx, name)
    if doc is None:
        ctx.db.insert("counters", {"name": name, "value": by})
        return by
    value = float(doc["value"]) + by
    ctx.db.patch(doc["_id"], {"value": value})
    return value


@counter.mutation
def inc(ctx: MutationCtx, name: str, by: float = 1.0) -> float:
    return _add(ctx, name, by)


@counter.internal_mutation
def internalInc(ctx: MutationCtx, name: str, by: float = 1.0) -> float:
    return _add(ctx, name, by)


@counter.mutation
def incThenFail(ctx: MutationCtx, name: str) -> None:
    _add(ctx, name, 1000.0)
    raise ConvexError({"code": "nope", "name": name})


@counter.query
def boom(ctx: QueryCtx) -> None:
    raise RuntimeError("boom on purpose")


@counter.query
def spin(ctx: QueryCtx) -> int:
    # Never returns: the engine's query time limit (checked on each db read) must stop it.
    n = 0
    while True:
        ctx.db.query("counters").with_index("by_name").first()
        n += 1


@counter.query
def padded(ctx: QueryCtx, name: str, size: int) -> dict[str, Any]:
    return {"value": get(ctx, name), "pad": "x" * size}


@counter.query
def big(ctx: QueryCtx, size: int) -> str:
    return "x" * size


@counter.action
async def echo(ctx: Any, value: Any) -> Any:
    return value
