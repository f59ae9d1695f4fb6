"""Engine behaviour with the example chat app over a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from marketpulse.reactive import FunctionModule, MutationCtx
from marketpulse.reactive.engine import Engine, Identity
from marketpulse.reactive.persistence import Commit, SqlitePersistence

from ..conftest import Recorder
from ..example_app import MODULES

ADMIN = Identity.admin()


async def send(engine: Engine, channel: str, sent_at: float, body: str = "hi", **kw: Any) -> str:
    r = await engine.run_mutation(
        "messages:send", {"channel": channel, "body": body, "sentAt": sent_at, **kw}
    )
    assert r.success, r.error_message
    assert isinstance(r.value, str)
    return r.value


def q(engine: Engine, path: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
    r = engine.run_query(path, args or {}, **kw)
    assert r.success, r.error_message
    return r.value


async def test_insert_get_and_system_fields(engine: Engine) -> None:
    doc_id = await send(engine, "general", 1.0, "hello")
    doc = q(engine, "messages:get", {"id": doc_id})
    assert doc["_id"] == doc_id
    assert isinstance(doc["_creationTime"], float)
    assert doc["body"] == "hello"
    assert q(engine, "messages:get", {"id": "nope"}) is None


async def test_index_order_and_take(engine: Engine) -> None:
    for t in (3.0, 1.0, 2.0):
        await send(engine, "a", t)
    await send(engine, "b", 10.0)
    got = q(engine, "messages:list", {"channel": "a", "limit": 2})
    assert [d["sentAt"] for d in got] == [3.0, 2.0]
    assert q(engine, "messages:between", {"channel": "a"}) == [1.0, 2.0, 3.0]
    assert q(engine, "messages:between", {"channel": "a", "order": "desc"}) == [3.0, 2.0, 1.0]


async def test_compound_index_ranges(engine: Engine) -> None:
    for t in (1.0, 2.0, 3.0, 4.0, 5.0):
        await send(engine, "a", t)
    await send(engine, "b", 3.0)

    def between(**kw: Any) -> list[float]:
        result: list[float] = q(engine, "messages:between", {"channel": "a", **kw})
        return result

    assert between(after=2.0) == [3.0, 4.0, 5.0]
    assert between(after=2.0, inclusive=True) == [2.0, 3.0, 4.0, 5.0]
    assert between(before=3.0) == [1.0, 2.0]
    assert between(before=3.0, inclusive=True) == [1.0, 2.0, 3.0]
    assert between(after=1.0, before=5.0) == [2.0, 3.0, 4.0]
    assert between(after=1.0, before=5.0, inclusive=True, order="desc") == [5, 4, 3, 2, 1]
    assert between(after=9.0) == []


async def test_unique_and_filter(engine: Engine) -> None:
    await send(engine, "a", 1.0, "short", author="ann")
    await send(engine, "a", 2.0, "a much longer one", author="bob")
    await send(engine, "a", 3.0, "x", author="bob")
    assert q(engine, "messages:by_author", {"author": "ann"})["body"] == "short"
    assert q(engine, "messages:by_author", {"author": "zed"}) is None
    r = engine.run_query("messages:by_author", {"author": "bob"})
    assert not r.success and "more than one" in (r.error_message or "")
    assert q(engine, "messages:long_ones", {"channel": "a", "min_len": 5}) == [
        "short",
        "a much longer one",
    ]


async def test_pagination_round_trip(engine: Engine) -> None:
    for t in range(7):
        await send(engine, "p", float(t))
    seen: list[float] = []
    cursor = None
    pages = 0
    while True:
        res = q(
            engine,
            "messages:page",
            {"channel": "p", "paginationOpts": {"numItems": 3, "cursor": cursor}},
        )
        seen += [d["sentAt"] for d in res["page"]]
        assert isinstance(res["continueCursor"], str)
        cursor = res["continueCursor"]
        pages += 1
        if res["isDone"]:
            break
    assert seen == [float(t) for t in range(7)]
    assert pages == 3
    # A cursor keeps its place when documents are inserted before it.
    first = q(
        engine, "messages:page", {"channel": "p", "paginationOpts": {"numItems": 2, "cursor": None}}
    )
    await send(engine, "p", -1.0)
    nxt = q(
        engine,
        "messages:page",
        {"channel": "p", "paginationOpts": {"numItems": 2, "cursor": first["continueCursor"]}},
    )
    assert [d["sentAt"] for d in nxt["page"]] == [2.0, 3.0]
    # Exactly one full page: isDone without an extra round trip.
    res = q(
        engine, "messages:page", {"channel": "p", "paginationOpts": {"numItems": 8, "cursor": None}}
    )
    assert len(res["page"]) == 8 and res["isDone"]
    bad = engine.run_query(
        "messages:page", {"channel": "p", "paginationOpts": {"numItems": -1, "cursor": None}}
    )
    assert not bad.success and "numItems" in (bad.error_message or "")


async def test_raising_mutation_writes_nothing(engine: Engine) -> None:
    await send(engine, "a", 1.0)
    ts = engine.ts
    r = await engine.run_mutation("messages:send_then_fail", {"channel": "a", "body": "x"})
    assert not r.success
    assert r.error_message == "Uncaught ValueError: changed my mind"
    assert engine.ts == ts
    assert q(engine, "messages:count", {"channel": "a"}) == 1
    r = await engine.run_mutation("messages:send_then_reject", {"channel": "a"})
    assert not r.success and r.has_error_data
    assert r.error_data == {"code": "REJECTED", "channel": "a"}
    assert r.encoded_error_data == {"code": "REJECTED", "channel": "a"}
    # The message shows the data as the official clients write it: JSON, not a Python repr.
    assert r.error_message == 'Uncaught ConvexError: {"code":"REJECTED","channel":"a"}'
    assert q(engine, "messages:count", {"channel": "a"}) == 1


async def test_mutation_reads_its_own_writes(engine: Engine) -> None:
    await send(engine, "a", 1.0)
    r = await engine.run_mutation(
        "messages:send_and_count", {"channel": "a", "body": "b", "sentAt": 2.0}
    )
    assert r.value == 2


async def test_concurrent_mutations_are_serializable(engine: Engine) -> None:
    results = await asyncio.gather(
        *(engine.run_mutation("counters:increment", {"name": "c"}) for _ in range(25))
    )
    assert all(r.success for r in results)
    assert sorted(r.value for r in results) == [float(i) for i in range(1, 26)]
    assert q(engine, "counters:value", {"name": "c"}) == 25.0
    stamps = [r.ts for r in results]
    assert len(set(stamps)) == 25


async def test_commit_timestamps_strictly_increase(engine: Engine) -> None:
    stamps = []
    for _ in range(20):
        r = await engine.run_mutation("counters:increment", {"name": "t"})
        stamps.append(r.ts)
        assert engine.ts == r.ts
    assert stamps == sorted(stamps) and len(set(stamps)) == 20
    # A mutation that writes nothing does not commit and reports the current ts.
    r = await engine.run_mutation("messages:edit", {"id": "missing", "body": "x"})
    assert not r.success and engine.ts == stamps[-1]


async def test_argument_validation(engine: Engine) -> None:
    def err(path: str, args: Any) -> str:
        r = engine.run_query(path, args)
        assert not r.success
        assert r.error_message is not None
        return r.error_message

    # Integral floats are ints (the Python client sends every number as a float).
    assert len(q(engine, "messages:list", {"channel": "a", "limit": 5.0})) == 0
    assert "ArgumentValidationError" in err("messages:list", {"channel": "a", "limit": 5.5})
    assert "limit" in err("messages:list", {"channel": "a", "limit": "5"})
    assert "less than or equal to 200" in err("messages:list", {"channel": "a", "limit": 500})
    assert "missing required argument 'channel'" in err("messages:list", {})
    assert "unexpected argument 'chanel'" in err("messages:list", {"channel": "a", "chanel": 1})
    assert "channel" in err("messages:list", {"channel": 5})
    assert "must be an object" in err("messages:list", [1, 2])
    # Floats accept ints; Optional and defaults are honoured.
    assert q(engine, "messages:between", {"channel": "a", "after": 1, "before": None}) == []
    r = await engine.run_mutation("messages:send", {"channel": "a", "body": 3, "sentAt": 1})
    assert not r.success and "body" in (r.error_message or "")


async def test_function_errors_are_results(engine: Engine) -> None:
    r = engine.run_query("messages:boom", {})
    assert not r.success and r.error_message == "Uncaught ValueError: boom"
    assert not r.has_error_data
    r = engine.run_query("messages:reject", {})
    assert r.has_error_data and r.error_data == {"code": "NOPE"}
    r = engine.run_query("messages:not_a_value", {})
    assert not r.success and "not a Convex value" in (r.error_message or "")
    r = engine.run_query("messages:big", {"n": 200_000})
    assert not r.success and "too large" in (r.error_message or "")
    r = engine.run_query("messages:spin", {})
    assert not r.success and "timed out" in (r.error_message or "")
    r = engine.run_query("messages:nope", {})
    assert r.error_message == "Could not find public function for 'messages:nope'"
    r = engine.run_query("messages:send", {})
    assert not r.success and "defined as Mutation" in (r.error_message or "")
    r = engine.run_query("::", {})
    assert not r.success


async def test_paths(engine: Engine) -> None:
    r = await engine.run_mutation("counters.js:increment", {"name": "x"})
    assert r.success
    assert q(engine, "counters", {}) == {"x": 1.0}
    assert q(engine, "counters.js:default", {}) == {"x": 1.0}
    assert q(engine, "admin/tools:ping", {"n": 2.0}) == ["pong", 2, False, None]
    assert q(engine, "admin/tools.js:ping", {}, identity=ADMIN) == ["pong", 1, True, None]
    user = Identity.for_user({"subject": "u1", "issuer": "me"})
    assert q(engine, "admin/tools:ping", {}, identity=user)[3] == {"subject": "u1", "issuer": "me"}


async def test_internal_functions_need_admin(engine: Engine) -> None:
    await send(engine, "a", 1.0)
    ts = engine.ts
    r = await engine.run_mutation("messages:purge", {"channel": "a"})
    assert r.error_message == "Could not find public function for 'messages:purge'"
    user = Identity.for_user({"subject": "u"})
    r = await engine.run_mutation("messages:purge", {"channel": "a"}, user)
    assert not r.success
    assert engine.ts == ts and q(engine, "messages:count", {"channel": "a"}) == 1
    assert not engine.run_query("messages:total", {}).success
    assert q(engine, "messages:total", {}, identity=ADMIN) == 1
    r = await engine.run_mutation("messages:purge", {"channel": "a"}, ADMIN)
    assert r.success and r.value == 1
    assert q(engine, "messages:count", {"channel": "a"}) == 0


async def test_actions(engine: Engine) -> None:
    r = await engine.run_action("counters:bump_twice", {"name": "z"})
    assert r.success and r.value == 2.0
    # Actions may call internal functions, whoever calls the action.
    r = await engine.run_action("counters:count_secretly", {})
    assert r.success and r.value == 0
    r = await engine.run_action("counters:increment", {"name": "z"})
    assert not r.success and "defined as Mutation" in (r.error_message or "")


async def test_log_lines(engine: Engine) -> None:
    r = engine.run_query("messages:echo_log", {"text": "hi"})
    assert r.log_lines == ["[LOG] 'hi'", "[WARN] 'careful' 1.5"]


# -- subscriptions and read sets ---------------------------------------------------------------


async def test_subscription_sees_writes_and_shares_runs(engine: Engine) -> None:
    r1, r2 = Recorder(), Recorder()
    sub = engine.subscribe("messages:list", {"channel": "a", "limit": 10}, None, r1)
    same = engine.subscribe("messages.js:list", {"limit": 10, "channel": "a"}, None, r2)
    assert same is sub and sub.runs == 1
    assert sub.result.success and sub.result.value == []
    await send(engine, "a", 1.0, "one")
    assert sub.runs == 2 and sub.version == 1
    assert [d["body"] for d in sub.result.value] == ["one"]
    assert sub.result.encoded_json.startswith(b"[{")
    assert sub.result.ts == engine.ts
    assert len(r1.updates) == len(r2.updates) == 1
    engine.unsubscribe(sub, r1)
    await send(engine, "a", 2.0, "two")
    assert len(r1.updates) == 1 and len(r2.updates) == 2
    engine.unsubscribe(sub, r2)
    assert engine.subscription_count == 0
    await send(engine, "a", 3.0)
    assert sub.runs == 3


async def test_write_outside_read_set_does_not_rerun(engine: Engine, recorder: Recorder) -> None:
    for t in (1.0, 2.0, 3.0):
        await send(engine, "a", t)
    sub = engine.subscribe(
        "messages:between", {"channel": "a", "after": 1.5, "before": 2.5}, None, recorder
    )
    assert sub.result.value == [2.0]
    runs = sub.runs
    await send(engine, "b", 2.0)  # other channel
    await send(engine, "a", 3.5)  # same channel, outside the range
    await send(engine, "a", 0.5)
    assert sub.runs == runs and recorder.updates == []
    await send(engine, "a", 2.2)  # inside
    assert sub.runs == runs + 1
    assert sub.result.value == [2.0, 2.2]
    assert recorder.updates == [(1, [2.0, 2.2])]


async def test_write_moving_doc_out_of_range_reruns(engine: Engine, recorder: Recorder) -> None:
    doc_id = await send(engine, "a", 1.0)
    await send(engine, "b", 1.0)
    sub = engine.subscribe("messages:count", {"channel": "a"}, None, recorder)
    assert sub.result.value == 1
    await engine.run_mutation("messages:move", {"id": doc_id, "channel": "c"})
    assert sub.result.value == 0 and recorder.updates == [(1, 0)]
    # Moving it between two channels nobody reads does not re-run.
    runs = sub.runs
    await engine.run_mutation("messages:move", {"id": doc_id, "channel": "d"})
    assert sub.runs == runs


async def test_patch_of_unindexed_field_reruns_readers(engine: Engine, recorder: Recorder) -> None:
    doc_id = await send(engine, "a", 1.0, "old")
    sub = engine.subscribe("messages:list", {"channel": "a"}, None, recorder)
    await engine.run_mutation("messages:edit", {"id": doc_id, "body": "new"})
    assert sub.result.value[0]["body"] == "new" and sub.version == 1
    sub_get = engine.subscribe("messages:get", {"id": doc_id}, None, recorder)
    runs = sub_get.runs
    await send(engine, "a", 2.0)  # does not touch the document read by id
    assert sub_get.runs == runs
    await engine.run_mutation("messages:remove", {"id": doc_id})
    assert sub_get.result.value is None


async def test_take_records_only_what_it_read(engine: Engine, recorder: Recorder) -> None:
    for t in (1.0, 2.0, 3.0, 4.0):
        await send(engine, "a", t)
    sub = engine.subscribe("messages:list", {"channel": "a", "limit": 2}, None, recorder)
    assert [d["sentAt"] for d in sub.result.value] == [4.0, 3.0]
    runs = sub.runs
    await send(engine, "a", 1.5)  # below the two newest: not read
    assert sub.runs == runs
    await send(engine, "a", 3.5)  # between the two newest
    assert sub.runs == runs + 1
    assert [d["sentAt"] for d in sub.result.value] == [4.0, 3.5]
    await send(engine, "a", 9.0)  # after the newest, in the read range's open end
    assert [d["sentAt"] for d in sub.result.value] == [9.0, 4.0]


async def test_unchanged_result_is_not_notified(engine: Engine, recorder: Recorder) -> None:
    await send(engine, "a", 1.0, "long enough")
    sub = engine.subscribe("messages:long_ones", {"channel": "a", "min_len": 5}, None, recorder)
    runs = sub.runs
    await send(engine, "a", 2.0, "x")  # read (same channel), but filtered out
    assert sub.runs == runs + 1 and sub.version == 0 and recorder.updates == []
    assert sub.result.ts == engine.ts


async def test_failed_subscription_and_identity_keys(engine: Engine, recorder: Recorder) -> None:
    sub = engine.subscribe("messages:total", {}, None, recorder)
    assert not sub.result.success
    admin_sub = engine.subscribe("messages:total", {}, ADMIN, recorder)
    assert admin_sub is not sub and admin_sub.result.value == 0
    await send(engine, "a", 1.0)
    assert admin_sub.result.value == 1 and not sub.result.success


async def test_subscription_with_bad_arguments_fails_once(
    engine: Engine, recorder: Recorder
) -> None:
    sub = engine.subscribe("messages:list", {"channel": 1}, None, recorder)
    assert not sub.result.success
    assert "ArgumentValidationError" in (sub.result.error_message or "")
    await send(engine, "a", 1.0)
    assert sub.runs == 0 and recorder.updates == []


async def test_rerun_gets_fresh_arguments(engine: Engine, recorder: Recorder) -> None:
    sub = engine.subscribe("messages:between", {"channel": "a", "after": 0}, None, recorder)
    await send(engine, "a", 1.0)
    await send(engine, "a", 2.0)
    assert sub.result.value == [1.0, 2.0] and sub.args == {"channel": "a", "after": 0}


class GatedSqlite(SqlitePersistence):
    """Real SQLite persistence whose writes wait for a gate (and can be made to fail)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False
        self.writes: list[Commit] = []

    def write_now(self, commit: Commit) -> bool:
        return False  # every commit takes the awaited write() path, where the gate is

    async def write(self, commit: Commit) -> None:
        self.writes.append(commit)
        await self.gate.wait()
        if self.fail:
            raise OSError("disk full")
        await super().write(commit)


async def test_pipelined_group_commit(tmp_path: Path) -> None:
    p = GatedSqlite(tmp_path / "g.sqlite3")
    eng = await Engine.open(p, MODULES)
    try:
        p.gate.clear()
        first = asyncio.ensure_future(send(eng, "a", 1.0))
        await asyncio.sleep(0.01)  # the first commit is now being written
        assert len(p.writes) == 1
        rest = [
            asyncio.ensure_future(
                eng.run_mutation(
                    "messages:send_and_count", {"channel": "a", "body": "b", "sentAt": t}
                )
            )
            for t in (2.0, 3.0, 4.0)
        ]
        await asyncio.sleep(0.01)
        # Queries only see durable state; the queued mutations ran on the pending state.
        assert q(eng, "messages:count", {"channel": "a"}) == 0
        assert not first.done() and not any(r.done() for r in rest)
        p.gate.set()
        await first
        results = [await r for r in rest]
        assert [r.value for r in results] == [2, 3, 4]
        assert len(p.writes) == 2  # the three queued commits went to disk together
        assert len(p.writes[1].writes) == 3
        stamps = [r.ts for r in results]
        assert stamps == sorted(stamps) and len(set(stamps)) == 3 and eng.ts == stamps[-1]
        assert q(eng, "messages:count", {"channel": "a"}) == 4
    finally:
        p.gate.set()
        await eng.close()
    eng2 = await Engine.open(SqlitePersistence(tmp_path / "g.sqlite3"), MODULES)
    assert eng2.run_query("messages:count", {"channel": "a"}).value == 4
    assert eng2.ts == stamps[-1]
    await eng2.close()


async def test_failed_write_fails_the_queue_and_recovers(tmp_path: Path) -> None:
    p = GatedSqlite(tmp_path / "f.sqlite3")
    eng = await Engine.open(p, MODULES)
    rec = Recorder()
    try:
        await send(eng, "a", 1.0)
        sub = eng.subscribe("messages:count", {"channel": "a"}, None, rec)
        p.gate.clear()
        p.fail = True
        doomed = asyncio.ensure_future(
            eng.run_mutation("messages:send", {"channel": "a", "body": "x", "sentAt": 2.0})
        )
        await asyncio.sleep(0.01)
        behind = asyncio.ensure_future(
            eng.run_mutation(
                "messages:send_and_count", {"channel": "a", "body": "y", "sentAt": 3.0}
            )
        )
        await asyncio.sleep(0.01)
        p.gate.set()
        r1, r2 = await doomed, await behind
        assert not r1.success and "disk full" in (r1.error_message or "")
        assert not r2.success
        assert sub.result.value == 1 and rec.updates == []
        p.fail = False
        r = await eng.run_mutation(
            "messages:send_and_count", {"channel": "a", "body": "z", "sentAt": 4.0}
        )
        assert r.success and r.value == 2
        assert sub.result.value == 2
    finally:
        p.gate.set()
        await eng.close()


poison = FunctionModule("poison")


@poison.mutation
def store(ctx: MutationCtx, kind: str) -> str:
    value: Any = "x"
    if kind == "surrogate":
        value = "x\ud800"  # built by the handler: no argument check sees it
    elif kind == "deep":
        for _ in range(300):
            value = [value]
    return ctx.db.insert("poisoned", {"v": value})


async def test_a_value_the_disk_cannot_hold_fails_only_its_own_mutation(tmp_path: Path) -> None:
    # Such a value used to be accepted, then failed its group's write: the innocent mutations
    # of the group failed with it, and (relaxed) every later write.
    p = GatedSqlite(tmp_path / "p.sqlite3")
    eng = await Engine.open(p, [*MODULES, poison])
    try:
        p.gate.clear()
        first = eng.start_mutation("poison:store", {"kind": "fine"})
        await asyncio.sleep(0.01)  # its write is in flight: the rest form the next group
        group = [
            eng.start_mutation("poison:store", {"kind": k})
            for k in ("fine", "surrogate", "fine", "deep", "fine")
        ]
        p.gate.set()
        results = [await first] + [await f for f in group]
        assert [r.success for r in results] == [True, True, False, True, False, True]
        assert "lone surrogate U+D800" in (results[2].error_message or "")
        assert "nested deeper than 64" in (results[4].error_message or "")
        assert len(p.writes) == 2
    finally:
        p.gate.set()
        await eng.close()
    again = await Engine.open(SqlitePersistence(tmp_path / "p.sqlite3"), [*MODULES, poison])
    try:
        assert (await again.run_mutation("poison:store", {"kind": "fine"})).success
    finally:
        await again.close()


async def test_absurd_arguments_are_errors_not_crashes(engine: Engine, recorder: Recorder) -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    for args in ({"channel": deep}, {"channel": object()}, {"channel": float("nan")}, "x"):
        sub = engine.subscribe("messages:list", args, None, recorder)
        assert not sub.result.success
        assert not engine.run_query("messages:list", args).success
        assert not (await engine.run_mutation("messages:send", args)).success
        engine.unsubscribe(sub, recorder)
    assert engine.subscription_count == 0
    assert not engine.run_query(123, {}).success  # type: ignore[arg-type]


async def test_pagination_end_cursor_keeps_page_boundaries(engine: Engine) -> None:
    for t in range(6):
        await send(engine, "p", float(t))

    def page(cursor: str | None, end: str | None = None, n: int = 2) -> dict[str, Any]:
        opts: dict[str, Any] = {"numItems": n, "cursor": cursor, "id": 1}
        if end is not None:
            opts["endCursor"] = end
        result: dict[str, Any] = q(
            engine, "messages:page", {"channel": "p", "paginationOpts": opts}
        )
        return result

    first = page(None)
    assert [d["sentAt"] for d in first["page"]] == [0.0, 1.0]
    # A document lands inside the first page: with endCursor the page grows instead of
    # pushing its last item into the next page.
    await send(engine, "p", 0.5)
    again = page(None, first["continueCursor"])
    assert [d["sentAt"] for d in again["page"]] == [0.0, 0.5, 1.0]
    assert again["continueCursor"] == first["continueCursor"] and not again["isDone"]
    second = page(first["continueCursor"])
    assert [d["sentAt"] for d in second["page"]] == [2.0, 3.0]
    last = page(second["continueCursor"], None, 10)
    assert [d["sentAt"] for d in last["page"]] == [4.0, 5.0] and last["isDone"]
    fixed_last = page(second["continueCursor"], last["continueCursor"])
    assert [d["sentAt"] for d in fixed_last["page"]] == [4.0, 5.0] and fixed_last["isDone"]


async def test_one_shot_query_reuses_a_live_subscription(
    engine: Engine, recorder: Recorder
) -> None:
    await send(engine, "a", 1.0)
    sub = engine.subscribe("messages:count", {"channel": "a"}, None, recorder)
    runs = engine.query_runs
    r = engine.run_query("messages.js:count", {"channel": "a"})
    assert r.value == 1 and engine.query_runs == runs
    await send(engine, "a", 2.0)
    runs = engine.query_runs
    r = engine.run_query("messages:count", {"channel": "a"})
    assert r.value == 2 and r is sub.result
    assert engine.query_runs == runs and r.ts == engine.ts
    # Another identity or other args run the function.
    assert engine.run_query("messages:count", {"channel": "b"}).value == 0
    assert engine.query_runs == runs + 1
    engine.unsubscribe(sub, recorder)
    assert engine.run_query("messages:count", {"channel": "a"}).value == 2
    assert engine.query_runs == runs + 2


async def test_mutation_time_limit_writes_nothing(engine: Engine) -> None:
    ts = engine.ts
    r = await engine.run_mutation("messages:spin_after_write", {"channel": "z"})
    assert not r.success and "timed out" in (r.error_message or "")
    assert engine.ts == ts and q(engine, "messages:count", {"channel": "z"}) == 0
    assert (await engine.run_mutation("counters:increment", {"name": "after"})).success


async def test_pure_cpu_loops_are_interrupted(engine: Engine) -> None:
    r = engine.run_query("messages:burn", {})
    assert not r.success and "timed out" in (r.error_message or "")
    ts = engine.ts
    r = await engine.run_mutation("messages:burn_after_write", {"channel": "z"})
    assert not r.success and "timed out" in (r.error_message or "")
    assert engine.ts == ts and q(engine, "messages:count", {"channel": "z"}) == 0
    # Everything keeps working, and a later run is not hit by a stale interrupt.
    await asyncio.sleep(0.3)
    assert (await engine.run_mutation("counters:increment", {"name": "after"})).success
    assert q(engine, "counters:value", {"name": "after"}) == 1.0


async def test_every_overrunning_run_is_interrupted(tmp_path: Path) -> None:
    from marketpulse.reactive import FunctionModule
    from marketpulse.reactive.limits import RunLimits
    from marketpulse.reactive.persistence import open_persistence

    mod = FunctionModule("cpu")

    @mod.query
    def busy(ctx: Any, seconds: float) -> str:
        import time

        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        return "finished"

    eng = await Engine.open(
        open_persistence(f"sqlite:{tmp_path / 'cpu.sqlite3'}"),
        [mod],
        limits=RunLimits(query_time_limit=0.02),
    )
    try:
        # Back-to-back runs, each four times over the limit: none may slip through.
        for _ in range(5):
            r = eng.run_query("cpu:busy", {"seconds": 0.08})
            assert not r.success and "timed out" in (r.error_message or "")
        assert eng.run_query("cpu:busy", {"seconds": 0.0}).value == "finished"
    finally:
        await eng.close()


async def test_nasty_results_and_errors_are_contained(engine: Engine) -> None:
    for kind in ("deep_result", "deep_error_data", "unprintable"):
        r = engine.run_query("messages:nasty", {"kind": kind})
        assert not r.success and r.error_message
    assert "unprintable Unprintable" in (
        engine.run_query("messages:nasty", {"kind": "x"}).error_message or ""
    )


async def test_modules_are_registered_once_and_clashes_refused(tmp_path: Path) -> None:
    from marketpulse.reactive import FunctionModule
    from marketpulse.reactive.persistence import open_persistence

    eng = await Engine.open(
        open_persistence(f"sqlite:{tmp_path / 'm.sqlite3'}"), [*MODULES, *MODULES]
    )
    try:
        assert "messages:list" in eng.functions
    finally:
        await eng.close()
    clash = FunctionModule("messages")

    @clash.query(name="list")
    def other(ctx: Any) -> None: ...

    with pytest.raises(ValueError, match="registered twice"):
        await Engine.open(open_persistence("sqlite::memory:"), [*MODULES, clash])


async def test_commit_timings_count_each_stage(engine: Engine, recorder: Recorder) -> None:
    engine.subscribe("messages:list", {"channel": "t"}, None, recorder)
    before = engine.timings.groups
    await send(engine, "t", 1.0)
    t = engine.timings
    assert t.groups == before + 1
    assert t.execute > 0 and t.write > 0 and t.apply > 0 and t.rerun > 0
    rerun = t.rerun
    r = await engine.run_mutation("messages:send", {"channel": "t", "body": 5, "sentAt": 1.0})
    assert not r.success  # a failed mutation is executed but writes nothing
    assert t.groups == before + 1 and t.rerun == rerun


async def test_a_small_commit_on_an_idle_engine_takes_no_loop_turn(tmp_path: Path) -> None:
    eng = await Engine.open(
        SqlitePersistence(tmp_path / "now.sqlite3", inline_max_writes=64), MODULES
    )
    rec = Recorder()
    try:
        sub = eng.subscribe("messages:count", {"channel": "a"}, None, rec)
        turned: list[bool] = []
        asyncio.get_running_loop().call_soon(turned.append, True)
        await send(eng, "a", 1.0)
        # Written, applied, re-run and heard of before the loop ran anything else.
        assert turned == [] and rec.updates == [(1, 1)] and sub.result.value == 1
        other = SqlitePersistence(tmp_path / "now.sqlite3")
        snap = await other.load()
        await other.close()
        assert snap.ts == eng.ts  # and durable
    finally:
        await eng.close()


async def test_a_failed_write_now_fails_the_mutation_and_the_engine_goes_on(
    tmp_path: Path,
) -> None:
    p = SqlitePersistence(tmp_path / "fail.sqlite3", inline_max_writes=64)
    eng = await Engine.open(p, MODULES)
    rec = Recorder()
    write_sync = p._write_sync
    failing = [True]

    def disk(commits: list[Commit]) -> None:
        if failing[0]:
            raise OSError(28, "No space left on device")
        write_sync(commits)

    p._write_sync = disk  # type: ignore[method-assign]
    try:
        sub = eng.subscribe("messages:count", {"channel": "a"}, None, rec)
        r = await eng.run_mutation("messages:send", {"channel": "a", "body": "x", "sentAt": 1.0})
        assert not r.success and "could not be committed" in (r.error_message or "")
        assert "No space left" in (r.error_message or "")
        assert q(eng, "messages:count", {"channel": "a"}) == 0 and rec.updates == []
        failing[0] = False
        await send(eng, "a", 2.0)
        assert sub.result.value == 1 and rec.updates == [(1, 1)]
    finally:
        await eng.close()
