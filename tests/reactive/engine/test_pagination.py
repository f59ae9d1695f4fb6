"""Reactive pagination in the engine: journals, split cursors, read limits, contiguity.

The churn test drives subscribed pages the way the official clients do (load more from the
last page's ``continueCursor``; split a grown page into ``[cursor, splitCursor]`` and
``[splitCursor, continueCursor]``) and checks, after every write, that the loaded pages
concatenate to exactly the query's rows: no duplicate, no gap.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from marketpulse.reactive import FunctionModule, MutationCtx, QueryCtx, Schema, Table
from marketpulse.reactive.engine import Engine, SharedQuery
from marketpulse.reactive.persistence import open_persistence

from ..conftest import Recorder

schema = Schema({"items": Table(indexes={"by_group": ["group", "n"]})})
items = FunctionModule("items", schema=schema)


@items.query
def page(
    ctx: QueryCtx, group: str, paginationOpts: dict[str, Any], order: str = "asc", odd: bool = False
) -> dict[str, Any]:
    q = ctx.db.query("items").with_index("by_group", lambda r: r.eq("group", group))
    q = q.order("desc" if order == "desc" else "asc")
    if odd:
        q = q.filter(lambda d: d["n"] % 2 == 1)
    return q.paginate(paginationOpts)


@items.query
def twice(ctx: QueryCtx, paginationOpts: dict[str, Any]) -> Any:
    ctx.db.query("items").paginate(paginationOpts)
    return ctx.db.query("items").paginate(paginationOpts)


@items.query
def all_n(ctx: QueryCtx, group: str, order: str = "asc") -> list[float]:
    q = ctx.db.query("items").with_index("by_group", lambda r: r.eq("group", group))
    return [d["n"] for d in q.order("desc" if order == "desc" else "asc").collect()]


@items.mutation(name="add")
def add_items(ctx: MutationCtx, group: str, ns: list[float]) -> list[str]:
    return [ctx.db.insert("items", {"group": group, "n": n}) for n in ns]


@items.mutation
def remove(ctx: MutationCtx, ids: list[str]) -> None:
    for doc_id in ids:
        ctx.db.delete(doc_id)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    eng = await Engine.open(open_persistence(f"sqlite:{tmp_path / 'p.sqlite3'}"), [items])
    try:
        yield eng
    finally:
        await eng.close()


async def add(engine: Engine, ns: list[float], group: str = "g") -> list[str]:
    r = await engine.run_mutation("items:add", {"group": group, "ns": ns})
    assert r.success, r.error_message
    ids: list[str] = r.value
    return ids


def page_of(engine: Engine, opts: dict[str, Any], **args: Any) -> dict[str, Any]:
    r = engine.run_query("items:page", {"group": "g", "paginationOpts": opts, **args})
    assert r.success, r.error_message
    value: dict[str, Any] = r.value
    return value


def ns(result: dict[str, Any]) -> list[float]:
    return [d["n"] for d in result["page"]]


async def test_subscribed_page_keeps_its_end_and_reports_its_journal(engine: Engine) -> None:
    await add(engine, [float(i) for i in range(10)])
    rec = Recorder()
    args = {"group": "g", "paginationOpts": {"numItems": 3, "cursor": None}}
    first = engine.subscribe("items:page", args, None, rec)
    assert ns(first.result.value) == [0.0, 1.0, 2.0]
    end = first.result.value["continueCursor"]
    assert first.result.journal == end == first.journal
    # Rows land inside the page: it grows instead of pushing rows into the next page.
    await add(engine, [0.5, 1.5])
    assert ns(first.result.value) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert first.result.value["continueCursor"] == end
    # A row after the page's end does not touch it (nor re-run it).
    runs = first.runs
    await add(engine, [7.5])
    assert first.runs == runs
    # A fresh subscriber with the same args and no journal shares it; one with a journal
    # from another run gets its own run ending there.
    other = engine.subscribe("items:page", args, None, Recorder(), journal=end)
    assert other is not first and ns(other.result.value) == ns(first.result.value)
    # A one-shot run with no journal is a fresh page of numItems, not the grown page.
    assert ns(page_of(engine, {"numItems": 3, "cursor": None})) == [0.0, 0.5, 1.0]


async def test_last_page_is_done_and_grows_at_the_end(engine: Engine) -> None:
    await add(engine, [1.0, 2.0])
    last = engine.subscribe(
        "items:page",
        {"group": "g", "paginationOpts": {"numItems": 5, "cursor": None}},
        None,
        Recorder(),
    )
    assert last.result.value["isDone"] and ns(last.result.value) == [1.0, 2.0]
    await add(engine, [3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    # Its end is the end of the range: everything appended lands in it.
    assert ns(last.result.value) == [float(i) for i in range(1, 9)]
    assert last.result.value["isDone"]
    # Past twice numItems the clients split it at splitCursor.
    split = last.result.value["splitCursor"]
    assert isinstance(split, str)
    opts = {"numItems": 5, "cursor": None, "endCursor": split}
    left = page_of(engine, opts)
    right = page_of(engine, {"numItems": 5, "cursor": split, "endCursor": last.journal})
    assert ns(left) + ns(right) == ns(last.result.value)
    assert not left["isDone"] and right["isDone"] and left["continueCursor"] == split


async def test_exactly_full_page_and_desc_order(engine: Engine) -> None:
    await add(engine, [float(i) for i in range(6)])
    full = page_of(engine, {"numItems": 6, "cursor": None})
    assert full["isDone"] and len(full["page"]) == 6
    seen: list[float] = []
    cursor = None
    for _ in range(10):
        res = page_of(engine, {"numItems": 4, "cursor": cursor}, order="desc")
        seen += ns(res)
        cursor = res["continueCursor"]
        if res["isDone"]:
            break
    assert seen == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    # Starting at the end gives an empty, done page.
    end = page_of(engine, {"numItems": 4, "cursor": cursor}, order="desc")
    assert end["page"] == [] and end["isDone"]


async def test_maximum_rows_read_requires_a_split(engine: Engine) -> None:
    await add(engine, [float(i) for i in range(20)])
    # Only odd rows match: 5 matches need 10 rows, but only 6 may be read.
    res = page_of(engine, {"numItems": 5, "cursor": None, "maximumRowsRead": 6}, odd=True)
    assert res["pageStatus"] == "SplitRequired" and not res["isDone"]
    assert ns(res) == [1.0, 3.0, 5.0]
    # The page ends after the last row read, so the next page continues right there.
    nxt = page_of(engine, {"numItems": 5, "cursor": res["continueCursor"]}, odd=True)
    assert ns(nxt) == [7.0, 9.0, 11.0, 13.0, 15.0]
    # The split cursor is in the middle of the rows read.
    left = page_of(
        engine, {"numItems": 5, "cursor": None, "endCursor": res["splitCursor"]}, odd=True
    )
    assert ns(left) == [1.0, 3.0]
    # With an end cursor the page reads its whole range, past the limit, and asks for a
    # split instead.
    whole = page_of(
        engine,
        {"numItems": 1, "cursor": None, "endCursor": res["continueCursor"], "maximumRowsRead": 1},
        odd=True,
    )
    assert ns(whole) == [1.0, 3.0, 5.0] and whole["pageStatus"] == "SplitRecommended"
    # Close to the limit (over 3/4 of it): a split is recommended.
    near = page_of(engine, {"numItems": 4, "cursor": None, "maximumRowsRead": 5})
    assert near["pageStatus"] == "SplitRecommended" and len(near["page"]) == 4


async def test_maximum_bytes_read(engine: Engine) -> None:
    await add(engine, [float(i) for i in range(10)])
    one = len(page_of(engine, {"numItems": 1, "cursor": None})["page"][0]["_id"])
    res = page_of(engine, {"numItems": 10, "cursor": None, "maximumBytesRead": 3 * one})
    # Each document is more than ``one`` bytes, so the budget is spent after 3 at most.
    assert res["pageStatus"] == "SplitRequired" and 1 <= len(res["page"]) <= 3


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"numItems": 0, "cursor": None}, "numItems"),
        ({"numItems": 2.5, "cursor": None}, "numItems"),
        ({"cursor": None}, "numItems"),
        ({"numItems": 2, "cursor": "not base64!"}, "InvalidCursor"),
        ({"numItems": 2, "cursor": None, "endCursor": "@@@"}, "InvalidCursor"),
        ({"numItems": 2, "cursor": None, "maximumRowsRead": 0}, "maximumRowsRead"),
        ({"numItems": 2, "cursor": None, "bogus": 1}, "unknown option"),
        ({"numItems": 10**6, "cursor": None}, "too many"),
    ],
)
async def test_bad_options_are_clear_errors(
    engine: Engine, opts: dict[str, Any], message: str
) -> None:
    r = engine.run_query("items:page", {"group": "g", "paginationOpts": opts})
    assert not r.success and message in (r.error_message or "")


async def test_a_cursor_of_another_query_is_refused(engine: Engine) -> None:
    """A position in group ``a``'s scan means nothing in group ``b``'s, or in another order."""
    await add(engine, [1.0, 2.0, 3.0], group="a")
    await add(engine, [1.0, 2.0, 3.0], group="b")
    first = page_of(engine, {"numItems": 1, "cursor": None}, group="a")
    cursor = first["continueCursor"]
    assert page_of(engine, {"numItems": 1, "cursor": cursor}, group="a")["page"][0]["n"] == 2.0
    for args in ({"group": "b"}, {"group": "a", "order": "desc"}):
        opts = {"numItems": 1, "cursor": cursor}
        r = engine.run_query("items:page", {"paginationOpts": opts, **args})
        assert not r.success and "InvalidCursor" in (r.error_message or ""), args
        ends = {"numItems": 1, "cursor": None, "endCursor": cursor}
        r = engine.run_query("items:page", {"paginationOpts": ends, **args})
        assert not r.success and "another query" in (r.error_message or ""), args


async def test_one_paginated_query_per_function(engine: Engine) -> None:
    r = engine.run_query("items:twice", {"paginationOpts": {"numItems": 1, "cursor": None}})
    assert not r.success and "MultiplePaginatedDatabaseQueries" in (r.error_message or "")


class Pages:
    """Subscribed pages driven like the official clients' paginated query."""

    def __init__(self, engine: Engine, n: int, order: str) -> None:
        self.engine = engine
        self.n = n
        self.order = order
        self.rec = Recorder()
        self.pages: list[SharedQuery] = [self._sub(None, None)]

    def _sub(self, cursor: str | None, end: str | None) -> SharedQuery:
        opts: dict[str, Any] = {"numItems": self.n, "cursor": cursor, "id": 7}
        if end is not None:
            opts["endCursor"] = end
        args = {"group": "g", "order": self.order, "paginationOpts": opts}
        return self.engine.subscribe("items:page", args, None, self.rec)

    def load_more(self) -> None:
        last = self.pages[-1].result.value
        if not last["isDone"]:
            self.pages.append(self._sub(last["continueCursor"], None))

    def split_grown(self) -> int:
        splits = 0
        for p in list(self.pages):
            v = p.result.value
            if v["splitCursor"] and len(v["page"]) > 2 * self.n:
                cursor = p.args["paginationOpts"]["cursor"]
                a = self._sub(cursor, v["splitCursor"])
                b = self._sub(v["splitCursor"], v["continueCursor"])
                self.engine.unsubscribe(p, self.rec)
                at = self.pages.index(p)
                self.pages[at : at + 1] = [a, b]
                splits += 1
        return splits

    def rows(self) -> list[float]:
        out: list[float] = []
        for p in self.pages:
            assert p.result.success, p.result.error_message
            out += ns(p.result.value)
        return out


@pytest.mark.parametrize(("seed", "order"), [(0, "asc"), (1, "desc"), (2, "desc")])
async def test_loaded_pages_stay_contiguous_under_churn(
    engine: Engine, seed: int, order: str
) -> None:
    rnd = random.Random(seed)
    ids = dict(zip(await add(engine, [float(i) for i in range(60)]), range(60), strict=True))
    pages = Pages(engine, 5, order)
    splits = 0
    for step in range(150):
        op = rnd.random()
        if op < 0.5:
            new = [rnd.uniform(-5, 70) for _ in range(rnd.randint(1, 4))]
            ids.update(zip(await add(engine, new), new, strict=True))
        elif op < 0.8 and ids:
            gone = rnd.sample(sorted(ids), min(len(ids), rnd.randint(1, 3)))
            r = await engine.run_mutation("items:remove", {"ids": gone})
            assert r.success, r.error_message
            for g in gone:
                del ids[g]
        elif op < 0.9:
            pages.load_more()
        splits += pages.split_grown()
        truth = engine.run_query("items:all_n", {"group": "g", "order": order}).value
        loaded = pages.rows()
        # Every loaded row once, in order, and exactly the rows of the loaded range.
        assert loaded == truth[: len(loaded)], (step, loaded, truth)
        if pages.pages[-1].result.value["isDone"]:
            assert loaded == truth
        for a, b in zip(pages.pages, pages.pages[1:], strict=False):
            assert b.args["paginationOpts"]["cursor"] == a.result.value["continueCursor"]
    assert splits > 0
