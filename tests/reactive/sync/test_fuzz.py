"""Fuzzing the sync protocol and the HTTP API with Hypothesis, a subscriber alongside.

Random and mutated messages go to a real server (sync WebSocket frames and HTTP bodies); each
must end in an answer or a clean close, never a dropped server, a traceback in the log or a
missed push to the well-behaved subscriber. Bounded in CI (``MARKETPULSE_FUZZ_SECONDS``,
default 4 s per target); set it higher to fuzz longer.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from marketpulse.reactive.limits import ConnectionLimits

from .serving import serve_store
from .test_connection import inc

SECONDS = float(os.environ.get("MARKETPULSE_FUZZ_SECONDS", "4"))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
TYPES = ["Connect", "ModifyQuerySet", "Mutation", "Action", "Authenticate", "Event", "Other"]
messages = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(TYPES)},
        optional={
            "sessionId": st.text(max_size=10) | json_values,
            "baseVersion": st.integers(-2, 3) | json_values,
            "newVersion": st.integers(-2, 4),
            "requestId": st.integers(-1, 5) | json_values,
            "udfPath": st.sampled_from(["counter:get", "counter:inc", "counter:internalInc", "x"])
            | json_values,
            "args": st.lists(json_values, max_size=2),
            "modifications": st.lists(
                st.fixed_dictionaries(
                    {
                        "type": st.sampled_from(["Add", "Remove", "X"]),
                        "queryId": st.integers(-1, 5),
                    },
                    optional={
                        "udfPath": st.sampled_from(["counter:get", "y"]),
                        "args": st.lists(json_values, max_size=2),
                    },
                ),
                max_size=4,
            ),
            "tokenType": st.sampled_from(["Admin", "User", "None", "Q"]),
            "value": json_values,
        },
    ).map(lambda m: orjson.dumps(m).decode()),
    st.text(max_size=200),
)


def run_for(seconds: float, test: Any) -> None:
    """Run a Hypothesis test repeatedly for about ``seconds`` (each run a fresh budget)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        test()


async def test_fuzz_sync_and_http_with_a_subscriber(tmp_path: Path) -> None:
    limits = ConnectionLimits(max_message_bytes=64 * 1024, connect_timeout_s=5.0)
    async with serve_store(tmp_path / "f.sqlite", limits) as store:
        watcher = await store.client()
        q = await watcher.subscribe("counter:get", {"name": "fuzz"})
        await watcher.wait_for(q)
        loop = asyncio.get_running_loop()

        async def one_socket(frames: list[str]) -> None:
            async with connect(store.ws_url, open_timeout=5, close_timeout=1) as ws:
                for frame in frames:
                    try:
                        await ws.send(frame)
                    except Exception:
                        break
                await asyncio.sleep(0.01)

        async def one_http(route: str, body: Any) -> None:
            async with httpx.AsyncClient(base_url=store.url, timeout=10) as http:
                r = await http.post(route, content=body)
                assert r.status_code < 500, (route, body, r.text)

        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(st.lists(messages, min_size=1, max_size=6))
        def sync_frames(frames: list[str]) -> None:
            asyncio.run_coroutine_threadsafe(one_socket(frames), loop).result(30)

        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(
            st.sampled_from(["/api/query", "/api/mutation", "/api/action", "/api/function",
                             "/api/query_batch", "/api/query_at_ts", "/api/run/counter/get"]),
            st.one_of(json_values.map(orjson.dumps), st.binary(max_size=100)),
        )  # fmt: skip
        def http_bodies(route: str, body: bytes) -> None:
            asyncio.run_coroutine_threadsafe(one_http(route, body), loop).result(30)

        await asyncio.to_thread(run_for, SECONDS, sync_frames)
        await asyncio.to_thread(run_for, SECONDS, http_bodies)
        # The subscriber saw nothing wrong and still gets its pushes.
        value = await inc(store, "fuzz")
        assert await watcher.wait_for(q, lambda v: v == value) == value
        assert watcher.failure is None
        await watcher.close()
