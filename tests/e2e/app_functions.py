"""Functions module for the e2e tests of paginated subscriptions and scheduled functions.

Module ``history``: a trade history read newest first through ``paginate`` (what
``usePaginatedQuery`` and ``onPaginatedUpdate_experimental`` subscribe to). Module ``later``:
functions that schedule others, and a listing of the ``_scheduled_functions`` system table.
Deliberately not the market-data app.
"""

from __future__ import annotations

from typing import Any

from marketpulse.reactive import FunctionModule, MutationCtx, QueryCtx, Schema, Table

schema = Schema(
    {
        "trades": Table(indexes={"by_ticker": ["ticker", "seq"]}),
        "runs": Table(indexes={"by_name": ["name"]}),
    }
)
history = FunctionModule("history", schema=schema)
later = FunctionModule("later", schema=schema)


def _trades(ctx: QueryCtx, ticker: str) -> Any:
    return ctx.db.query("trades").with_index("by_ticker", lambda q: q.eq("ticker", ticker))


@history.query
def page(ctx: QueryCtx, ticker: str, paginationOpts: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = _trades(ctx, ticker).order("desc").paginate(paginationOpts)
    return result


@history.query
def seqs(ctx: QueryCtx, ticker: str) -> list[float]:
    return [d["seq"] for d in _trades(ctx, ticker).order("desc").collect()]


@history.mutation
def insert(ctx: MutationCtx, ticker: str, seqs: list[float]) -> int:
    for seq in seqs:
        ctx.db.insert("trades", {"ticker": ticker, "seq": seq, "price": 50.0, "size": 1.0})
    return len(seqs)


@history.mutation
def remove(ctx: MutationCtx, ticker: str, seqs: list[float]) -> int:
    removed = 0
    for seq in seqs:
        doc = (
            ctx.db.query("trades")
            .with_index("by_ticker", lambda q, s=seq: q.eq("ticker", ticker).eq("seq", s))
            .first()
        )
        if doc is not None:
            ctx.db.delete(doc["_id"])
            removed += 1
    return removed


@later.internal_mutation
def record(ctx: MutationCtx, name: str) -> None:
    ctx.db.insert("runs", {"name": name})


@later.mutation
def schedule(ctx: MutationCtx, name: str, seconds: float) -> str:
    job_id: str = ctx.scheduler.run_after(seconds, "later:record", {"name": name})
    return job_id


@later.mutation
def schedule_then_fail(ctx: MutationCtx, name: str) -> None:
    ctx.scheduler.run_after(0, "later:record", {"name": name})
    raise RuntimeError("failed after scheduling")


@later.mutation
def cancel(ctx: MutationCtx, id: str) -> None:
    ctx.scheduler.cancel(id)


@later.query
def runs(ctx: QueryCtx, name: str) -> int:
    return len(ctx.db.query("runs").with_index("by_name", lambda q: q.eq("name", name)).collect())


@later.query
def jobs(ctx: QueryCtx) -> list[dict[str, Any]]:
    return [
        {"id": j["_id"], "name": j["name"], "args": j["args"], "state": j["state"]["kind"]}
        for j in ctx.db.system.query("_scheduled_functions").collect()
    ]
