"""Relaxed durability through a real ``marketpulse serve`` on SQLite, SIGKILLed mid-stream.

Writers send relaxed mutations back to back over sync WebSockets while another sends durable
ones; the store is SIGKILLed, restarted, and must hold a prefix of the commit order (every
number of ``seq``'s sequence up to its head, nothing past it), every acknowledged durable
write, and lose only acknowledged relaxed writes from the tail after the last flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from marketpulse.reactive.sync.client import LightSyncClient, ServerError
from marketpulse.testing import AdminClient, LocalSystem, StoreProcess, wait_for_trades

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

RELAXED_WRITERS = 4


def _store(tmp_path: Path, flush_ms: float) -> StoreProcess:
    return StoreProcess(
        tmp_path / "store.sqlite",
        functions="durability_functions",
        pythonpath=[Path(__file__).parent],
        log_path=tmp_path / "store.log",
        extra=["--relaxed-flush-ms", str(flush_ms)],
    )


async def _writer(
    url: str, path: str, name: str, acked: list[int], stop: asyncio.Event, pause: float
) -> None:
    """Send ``path`` one at a time until the store dies or ``stop``; record each ack."""
    client = LightSyncClient(LightSyncClient.ws_url(url), keep_transitions=False)
    await client.connect()
    try:
        while not stop.is_set():
            try:
                async with asyncio.timeout(10):
                    answer = await client.request("Mutation", path, {"writer": name})
            except (ServerError, OSError, TimeoutError):
                return  # the store was killed
            assert answer.get("success"), answer
            acked.append(int(answer["result"]))
            if pause:
                await asyncio.sleep(pause)
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def _crash_mid_stream(
    store: StoreProcess, run_s: float, durable_pause: float
) -> tuple[list[int], list[int]]:
    relaxed: list[int] = []
    durable: list[int] = []
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(_writer(store.url, "seq:relaxed", f"r{i}", relaxed, stop, 0.0))
        for i in range(RELAXED_WRITERS)
    ]
    tasks.append(
        asyncio.create_task(_writer(store.url, "seq:durable", "d", durable, stop, durable_pause))
    )
    await asyncio.sleep(run_s)
    await asyncio.to_thread(store.kill)
    async with asyncio.timeout(30):
        await asyncio.gather(*tasks)
    return relaxed, durable


@pytest.mark.parametrize("flush_ms", [10.0, 300.0])
async def test_sigkill_leaves_a_prefix_of_the_commit_order(tmp_path: Path, flush_ms: float) -> None:
    store = _store(tmp_path, flush_ms).start()
    try:
        # A long flush period with rare durable writes leaves a long unflushed tail: the
        # crash must then lose some relaxed acks, and still leave a prefix.
        durable_pause = 0.05 if flush_ms <= 10 else 0.5
        relaxed, durable = await _crash_mid_stream(store, 2.0, durable_pause)
        store.stop()
        started = time.monotonic()
        store.start()
        with AdminClient(store.url, timeout=10) as admin:
            state = admin.query("seq:state", {})
    finally:
        store.stop()
    head, rows = state["head"], state["rows"]
    lost = sorted(n for n in relaxed if n > head)
    print(
        f"DURABILITY flush={flush_ms:g}ms acked relaxed={len(relaxed)} durable={len(durable)} "
        f"recovered head={head} lost relaxed acks={len(lost)} "
        f"restart={time.monotonic() - started:.1f}s"
    )
    assert len(relaxed) > 50 and len(durable) > 1
    # A prefix: exactly 1..head, nothing torn (a row without its head) or reordered.
    assert rows == list(range(1, head + 1))
    # Every acknowledged durable write survived, and so did everything before it.
    assert max(durable) <= head
    # Only relaxed acks from the tail were lost.
    assert all(n in set(rows) for n in relaxed if n <= head)
    if flush_ms > 10:
        assert lost, "the crash lost no relaxed ack: the test did not reach the unflushed tail"


@pytest.mark.parametrize("path", ["seq:durable", "seq:relaxed"])
async def test_a_mutation_re_sent_after_a_crash_runs_once(tmp_path: Path, path: str) -> None:
    """A client whose mutation was answered (or whose answer was lost with the store) re-sends
    it under the same session and request id to the restarted store: its receipt, written in
    the commit, answers it with the original outcome, and nothing is written again."""
    store = _store(tmp_path, 10.0).start()
    session = "resending-session"
    try:
        first = LightSyncClient(LightSyncClient.ws_url(store.url), session_id=session)
        await first.connect()
        answer = await first.request("Mutation", path, {"writer": "w"}, request_id=5)
        await first.close()
        assert answer["success"], answer
        await asyncio.sleep(0.2)  # past a relaxed commit's flush
        await asyncio.to_thread(store.kill)
        store.start()
        again = LightSyncClient(LightSyncClient.ws_url(store.url), session_id=session)
        await again.connect()
        resent = await again.request("Mutation", path, {"writer": "w"}, request_id=5)
        await again.close()
        with AdminClient(store.url, timeout=10) as admin:
            state = admin.query("seq:state", {})
    finally:
        store.stop()
    assert resent["success"] and resent["result"] == answer["result"] == 1.0
    assert resent["ts"] == answer["ts"], "answered from the receipt"
    assert state == {"head": 1, "rows": [1]}, "written once"


MARKETS = 6
RATE = 40.0


def _first_equal(system: LocalSystem, tickers: list[str], timeout: float) -> dict[str, float]:
    """Seconds until each ticker's served book first equals the simulator's (inf: never within
    ``timeout``). Per market: one poll of all of them can take long enough on a loaded machine
    for some book to move between its two reads."""
    start = time.monotonic()
    found: dict[str, float] = {}
    while len(found) < len(tickers) and time.monotonic() - start < timeout:
        for t in tickers:
            if t not in found and system.store_book(t) == system.sim_book(t):
                found[t] = time.monotonic() - start
        time.sleep(0.05)
    return {t: found.get(t, float("inf")) for t in tickers}


async def test_after_a_store_crash_the_worker_resends_every_market(tmp_path: Path) -> None:
    """The pipeline (simulator, Temporal, worker, store), the store SIGKILLed mid-stream and
    started again at once: the worker notices (its lease revived), re-sends every market's
    full state and re-fetches the trades of the lost tail, so within 5 s of the store's return
    every served book equals the simulator's, and every trade is stored once."""
    with LocalSystem(tmp_path) as system:
        streaming = await system.start_streaming(
            markets=MARKETS, workflow_id="durability", rate=RATE, persistent_temporal=True
        )
        tickers = streaming.markets
        await asyncio.sleep(2)
        await asyncio.to_thread(system.procs["store"].kill)
        await asyncio.to_thread(system.restart, "store")  # returns once /health answers
        firsts = await asyncio.to_thread(_first_equal, system, tickers, 30.0)
        back = max(firsts.values())
        lost, twice, compared = await asyncio.to_thread(wait_for_trades, system, tickers)
        worker_log = (tmp_path / "worker.log").read_text(errors="replace")
    print(
        f"DURABILITY store SIGKILLed: books equal the simulator's {back:.1f}s after its return; "
        f"trades lost={lost} twice={twice} compared={compared}"
    )
    assert "re-sending the full state" in worker_log
    assert back <= 5.0, f"books equal the simulator's only {back:.1f}s after the store's return"
    assert compared > 0 and (lost, twice) == (0, 0)
