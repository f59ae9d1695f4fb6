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
from marketpulse.testing import AdminClient, StoreProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

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


async def _crash_mid_stream(store: StoreProcess, run_s: float, durable_pause: float) -> tuple[
    list[int], list[int]
]:
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
