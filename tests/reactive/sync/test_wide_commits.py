"""A commit that touches more of a socket's queries than one slice of the loop re-runs: the
rest re-run in later turns, and the socket's Transitions wait for them, so every Transition
still shows the whole query set at one commit."""

from __future__ import annotations

from pathlib import Path

from marketpulse.reactive.limits import RunLimits

from ..engine.test_deferred_reruns import QUERIES, wide
from .serving import serve_store


async def test_every_transition_shows_one_commit_across_the_query_set(tmp_path: Path) -> None:
    limits = RunLimits(inline_query_s=0.002)
    async with serve_store(tmp_path / "s.sqlite", modules=[wide], run_limits=limits) as served:
        admin = await served.client()
        assert (await admin.request("Mutation", "wide:fill", {"n": float(QUERIES)}))["success"]
        client = await served.client()
        ids = [await client.subscribe("wide:cell", {"k": float(k)}) for k in range(QUERIES)]
        for query_id in ids:
            assert await client.wait_for(query_id) == 0.0
        seen = len(client.transitions)
        # Pipelined relaxed commits, each touching every query of the set.
        futures = [
            await admin.send_request("Mutation", "wide:set_all", {"v": float(v)})
            for v in range(1, 6)
        ]
        for future in futures:
            assert (await future)["success"]
        await client.wait_for(ids[-1], lambda v: v == 5.0)
        for query_id in ids:
            assert await client.wait_for(query_id, lambda v: v == 5.0) == 5.0
        assert served.engine.timings.deferred > 0  # the commits did not fit one slice
        # Replay the Transitions: after each one every query shows the same commit.
        values = dict.fromkeys(ids, 0.0)
        for transition in client.transitions[seen:]:
            for mod in transition.modifications:
                assert mod["type"] == "QueryUpdated", mod
                values[mod["queryId"]] = mod["value"]
            assert len(set(values.values())) == 1, values
        await client.close()
        await admin.close()
