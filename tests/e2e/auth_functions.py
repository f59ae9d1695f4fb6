"""A small functions module that reads the caller's identity, served by the auth tests.

Module name ``whoami``: ``me`` (any caller; null when signed out), and functions that need a
signed-in user (a query, a mutation, an action) and fail with a clear error otherwise.
"""

from __future__ import annotations

from typing import Any

from marketpulse.reactive import (
    ActionCtx,
    ConvexError,
    FunctionModule,
    MutationCtx,
    QueryCtx,
    Schema,
    Table,
)

schema = Schema({"visits": Table(indexes={"by_user": ["user"]})})
whoami = FunctionModule("whoami", schema=schema)


def _require_user(ctx: QueryCtx | ActionCtx) -> dict[str, Any]:
    identity = ctx.auth.get_user_identity()
    if identity is None:
        raise ConvexError({"code": "Unauthenticated", "message": "Sign in first"})
    return identity


@whoami.query
def me(ctx: QueryCtx) -> dict[str, Any] | None:
    return ctx.auth.get_user_identity()


@whoami.query
def subject(ctx: QueryCtx) -> str:
    return str(_require_user(ctx)["subject"])


@whoami.mutation
def visit(ctx: MutationCtx) -> float:
    user = _require_user(ctx)["tokenIdentifier"]
    ctx.db.insert("visits", {"user": user})
    return float(
        len(ctx.db.query("visits").with_index("by_user", lambda q: q.eq("user", user)).collect())
    )


@whoami.query
def myVisits(ctx: QueryCtx) -> float:
    user = _require_user(ctx)["tokenIdentifier"]
    return float(
        len(ctx.db.query("visits").with_index("by_user", lambda q: q.eq("user", user)).collect())
    )


@whoami.action
async def meFromAction(ctx: ActionCtx) -> dict[str, Any]:
    return _require_user(ctx)
