"""``ctx.db`` (``engine/_database.py``) against the engine."""

from __future__ import annotations

from typing import Any

from marketpulse.reactive import FunctionModule, MutationCtx, QueryCtx, Schema, Table
from marketpulse.reactive.engine import Engine
from marketpulse.reactive.persistence import open_persistence

from ..conftest import Recorder

m = FunctionModule("ids", schema=Schema({"a": Table(), "b": Table()}))


@m.mutation
def add(ctx: MutationCtx, table: str) -> str:
    return ctx.db.insert(table, {"x": 1.0})


@m.mutation
def rm(ctx: MutationCtx, id: str) -> None:
    ctx.db.delete(id)


@m.query
def norm(ctx: QueryCtx, table: str, id: Any) -> str | None:
    return ctx.db.normalize_id(table, id)


async def test_normalize_id_checks_form_and_table_not_existence() -> None:
    # Convex's normalizeId: "does not guarantee that the ID exists". It used to check
    # existence without recording the read, so a subscription went stale on a delete.
    eng = await Engine.open(open_persistence("sqlite::memory:"), [m])
    try:
        doc = (await eng.run_mutation("ids:add", {"table": "a"})).value
        rec = Recorder()
        same = eng.subscribe("ids:norm", {"table": "a", "id": doc}, None, rec)
        other = eng.subscribe("ids:norm", {"table": "b", "id": doc}, None, rec)
        assert (same.result.value, other.result.value) == (doc, None)
        for bad in ("", "x" * 31, doc.upper(), doc[:-1] + "u", 7.0):
            assert eng.run_query("ids:norm", {"table": "a", "id": bad}).value is None
        await eng.run_mutation("ids:rm", {"id": doc})
        # Deleted, the id is still one of table a's; nothing says it is another table's now.
        for sub in (same, other):
            fresh = eng._execute_query(eng.functions["ids:norm"], sub.args, sub.identity)[0]
            assert sub.result.value == fresh.value == doc
    finally:
        await eng.close()
