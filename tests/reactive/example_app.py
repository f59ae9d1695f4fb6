"""A small chat app used by the reactive store's tests (deliberately not market data)."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any, Literal

from pydantic import Field

from marketpulse.reactive import (
    ActionCtx,
    ConvexError,
    FunctionModule,
    MutationCtx,
    QueryCtx,
    Schema,
    Table,
)

schema = Schema(
    {
        "messages": Table(indexes={"by_channel": ["channel", "sentAt"], "by_author": ["author"]}),
        "counters": Table(indexes={"by_name": ["name"]}),
    }
)

messages = FunctionModule("messages", schema=schema)
counters = FunctionModule("counters", schema=schema)
tools = FunctionModule("admin/tools")


@messages.query(name="list")
def list_messages(
    ctx: QueryCtx, channel: str, limit: Annotated[int, Field(ge=1, le=200)] = 20
) -> list[dict[str, Any]]:
    return (
        ctx.db.query("messages")
        .with_index("by_channel", lambda q: q.eq("channel", channel))
        .order("desc")
        .take(limit)
    )


@messages.query
def between(
    ctx: QueryCtx,
    channel: str,
    after: float | None = None,
    before: float | None = None,
    inclusive: bool = False,
    order: Literal["asc", "desc"] = "asc",
) -> list[float]:
    def rng(q: Any) -> Any:
        q = q.eq("channel", channel)
        if after is not None:
            q = q.gte("sentAt", after) if inclusive else q.gt("sentAt", after)
        if before is not None:
            q = q.lte("sentAt", before) if inclusive else q.lt("sentAt", before)
        return q

    docs = ctx.db.query("messages").with_index("by_channel", rng).order(order).collect()
    return [d["sentAt"] for d in docs]


@messages.query
def page(ctx: QueryCtx, channel: str, paginationOpts: dict[str, Any]) -> dict[str, Any]:
    return (
        ctx.db.query("messages")
        .with_index("by_channel", lambda q: q.eq("channel", channel))
        .paginate(paginationOpts)
    )


@messages.query
def count(ctx: QueryCtx, channel: str) -> int:
    return len(
        ctx.db.query("messages")
        .with_index("by_channel", lambda q: q.eq("channel", channel))
        .collect()
    )


@messages.query
def all_bodies(ctx: QueryCtx) -> list[str]:
    return [d["body"] for d in ctx.db.query("messages").collect()]


@messages.query
def by_author(ctx: QueryCtx, author: str) -> dict[str, Any] | None:
    return (
        ctx.db.query("messages").with_index("by_author", lambda q: q.eq("author", author)).unique()
    )


@messages.query
def long_ones(ctx: QueryCtx, channel: str, min_len: int) -> list[str]:
    docs = (
        ctx.db.query("messages")
        .with_index("by_channel", lambda q: q.eq("channel", channel))
        .filter(lambda d: len(d["body"]) >= min_len)
        .collect()
    )
    return [d["body"] for d in docs]


@messages.query
def get(ctx: QueryCtx, id: str) -> dict[str, Any] | None:
    return ctx.db.get(id)


@messages.mutation
def send(ctx: MutationCtx, channel: str, body: str, sentAt: float, author: str = "anon") -> str:
    return ctx.db.insert(
        "messages", {"channel": channel, "body": body, "sentAt": sentAt, "author": author}
    )


@messages.mutation
def edit(ctx: MutationCtx, id: str, body: str) -> None:
    ctx.db.patch(id, {"body": body})


@messages.mutation
def move(ctx: MutationCtx, id: str, channel: str) -> None:
    ctx.db.patch(id, {"channel": channel})


@messages.mutation
def remove(ctx: MutationCtx, id: str) -> None:
    ctx.db.delete(id)


@messages.mutation
def send_then_fail(ctx: MutationCtx, channel: str, body: str) -> None:
    ctx.db.insert("messages", {"channel": channel, "body": body, "sentAt": 0.0})
    raise ValueError("changed my mind")


@messages.mutation
def send_then_reject(ctx: MutationCtx, channel: str) -> None:
    ctx.db.insert("messages", {"channel": channel, "body": "x", "sentAt": 0.0})
    raise ConvexError({"code": "REJECTED", "channel": channel})


@messages.mutation
def send_and_count(ctx: MutationCtx, channel: str, body: str, sentAt: float) -> int:
    ctx.db.insert("messages", {"channel": channel, "body": body, "sentAt": sentAt})
    # Reads inside a mutation see its own writes.
    return len(
        ctx.db.query("messages")
        .with_index("by_channel", lambda q: q.eq("channel", channel))
        .collect()
    )


@messages.internal_mutation
def purge(ctx: MutationCtx, channel: str) -> int:
    docs = (
        ctx.db.query("messages")
        .with_index("by_channel", lambda q: q.eq("channel", channel))
        .collect()
    )
    for d in docs:
        ctx.db.delete(d["_id"])
    return len(docs)


@messages.internal_query
def total(ctx: QueryCtx) -> int:
    return len(ctx.db.query("messages").collect())


@messages.query
def spin(ctx: QueryCtx) -> None:
    while True:
        ctx.db.query("messages").first()


@messages.mutation
def spin_after_write(ctx: MutationCtx, channel: str) -> None:
    ctx.db.insert("messages", {"channel": channel, "body": "x", "sentAt": 0.0})
    while True:
        ctx.db.query("messages").first()


@messages.query
def burn(ctx: QueryCtx) -> None:
    while True:
        with contextlib.suppress(BaseException):  # even one that swallows everything stops
            sum(range(100))


@messages.mutation
def burn_after_write(ctx: MutationCtx, channel: str) -> None:
    ctx.db.insert("messages", {"channel": channel, "body": "x", "sentAt": 0.0})
    while True:
        pass


@messages.query
def boom(ctx: QueryCtx) -> None:
    raise ValueError("boom")


@messages.query
def reject(ctx: QueryCtx) -> None:
    raise ConvexError({"code": "NOPE"})


@messages.query
def not_a_value(ctx: QueryCtx) -> Any:
    return {"when": object()}


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


@messages.query
def nasty(ctx: QueryCtx, kind: str) -> Any:
    deep: Any = 1.0
    for _ in range(5000):
        deep = [deep]
    if kind == "deep_result":
        return deep
    if kind == "deep_error_data":
        raise ConvexError(deep)
    raise Unprintable()


@messages.query
def big(ctx: QueryCtx, n: int) -> str:
    return "x" * n


@messages.query
def echo_log(ctx: QueryCtx, text: str) -> str:
    ctx.log(text)
    ctx.warn("careful", 1.5)
    return text


@counters.mutation
def increment(ctx: MutationCtx, name: str) -> float:
    doc = ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).unique()
    if doc is None:
        ctx.db.insert("counters", {"name": name, "value": 1.0})
        return 1.0
    ctx.db.patch(doc["_id"], {"value": doc["value"] + 1})
    return float(doc["value"] + 1)


@counters.query
def value(ctx: QueryCtx, name: str) -> float:
    doc = ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).unique()
    return 0.0 if doc is None else float(doc["value"])


@counters.query(name="default")
def everything(ctx: QueryCtx) -> dict[str, float]:
    return {d["name"]: d["value"] for d in ctx.db.query("counters").collect()}


@counters.action
async def bump_twice(ctx: ActionCtx, name: str) -> float:
    await ctx.run_mutation("counters:increment", {"name": name})
    await ctx.run_mutation("counters:increment", {"name": name})
    result: float = await ctx.run_query("counters:value", {"name": name})
    return result


@counters.action
async def count_secretly(ctx: ActionCtx) -> int:
    result: int = await ctx.run_query("messages:total", {})
    return result


@tools.query
def ping(ctx: QueryCtx, n: int = 1) -> list[Any]:
    return ["pong", n, ctx.is_admin, ctx.auth.get_user_identity()]


MODULES = [messages, counters, tools]
