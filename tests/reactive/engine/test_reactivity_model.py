"""Random workloads: every subscription always equals a fresh run (no missed invalidation),
and queries whose read sets a commit did not touch are not re-run."""

from __future__ import annotations

import random
from typing import Any

import pytest

from marketpulse.reactive.engine import Engine, Identity

from ..conftest import Recorder

FRESH = Identity.for_user({"subject": "fresh-run"})  # a different cache key: forces a real run


def random_subscription(rnd: random.Random) -> tuple[str, dict[str, Any]]:
    channel = rnd.choice("abc")
    kind = rnd.randrange(5)
    if kind == 0:
        return "messages:list", {"channel": channel, "limit": rnd.randint(1, 4)}
    if kind == 1:
        lo, hi = sorted(rnd.sample(range(12), 2))
        return "messages:between", {
            "channel": channel,
            "after": float(lo),
            "before": float(hi),
            "inclusive": rnd.random() < 0.5,
            "order": rnd.choice(["asc", "desc"]),
        }
    if kind == 2:
        return "messages:page", {
            "channel": channel,
            "paginationOpts": {"numItems": 2, "cursor": None},
        }
    if kind == 3:
        return "messages:long_ones", {"channel": channel, "min_len": rnd.randint(1, 6)}
    return "messages:count", {"channel": channel}


@pytest.mark.parametrize("seed", range(4))
async def test_subscriptions_track_fresh_results(engine: Engine, seed: int) -> None:
    rnd = random.Random(seed)
    ids: list[str] = []
    for _ in range(10):
        r = await engine.run_mutation(
            "messages:send",
            {
                "channel": rnd.choice("abc"),
                "body": "x" * rnd.randint(1, 8),
                "sentAt": float(rnd.randrange(12)),
            },
        )
        ids.append(r.value)
    rec = Recorder()
    subs = [engine.subscribe(*random_subscription(rnd), None, rec) for _ in range(25)]
    for _ in range(40):
        op = rnd.random()
        if op < 0.4 or not ids:
            r = await engine.run_mutation(
                "messages:send",
                {
                    "channel": rnd.choice("abcd"),
                    "body": "y" * rnd.randint(1, 8),
                    "sentAt": float(rnd.randrange(12)),
                },
            )
            ids.append(r.value)
        elif op < 0.6:
            r = await engine.run_mutation(
                "messages:move", {"id": rnd.choice(ids), "channel": rnd.choice("abcd")}
            )
        elif op < 0.8:
            r = await engine.run_mutation(
                "messages:edit", {"id": rnd.choice(ids), "body": "z" * rnd.randint(1, 8)}
            )
        else:
            doc_id = ids.pop(rnd.randrange(len(ids)))
            r = await engine.run_mutation("messages:remove", {"id": doc_id})
        assert r.success, r.error_message
        before = {id(s): s.runs for s in subs}
        for s in subs:
            # A subscribed page keeps the end its first run found (its journal).
            fresh = engine.run_query(s.path, s.args, FRESH, journal=s.journal)
            assert s.result.value == fresh.value, (s.path, s.args)
        # The check above ran the functions under another identity: no shared run was added.
        assert all(s.runs == before[id(s)] for s in subs)


async def test_untouched_queries_are_not_rerun(engine: Engine) -> None:
    rec = Recorder()
    subs = {c: engine.subscribe("messages:count", {"channel": c}, None, rec) for c in "abcdefgh"}
    for i in range(16):
        channel = "abcdefgh"[i % 8]
        runs = {c: s.runs for c, s in subs.items()}
        r = await engine.run_mutation(
            "messages:send", {"channel": channel, "body": "b", "sentAt": float(i)}
        )
        assert r.success
        for c, s in subs.items():
            assert s.runs == runs[c] + (1 if c == channel else 0)
    assert all(s.result.value == 2 for s in subs.values())
