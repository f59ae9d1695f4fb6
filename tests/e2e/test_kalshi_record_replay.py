"""`marketpulse record` against the simulator, then the recording replayed by a second simulator:
the recorded frames rebuild the live books exactly, and a feed on the replay ends equal too."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from marketpulse.kalshi import KalshiCredentials, KalshiFeed, KalshiProtocol
from polling import until

simulator = pytest.importorskip("marketpulse.simulator")
if not hasattr(simulator, "Simulator"):
    pytest.skip("marketpulse.simulator.Simulator is not available", allow_module_level=True)

pytestmark = pytest.mark.e2e
CHANNELS = ("orderbook_delta", "ticker", "trade")


async def test_record_then_replay(tmp_path: Path) -> None:
    live = simulator.Simulator(
        simulator.SimulatorConfig(
            host="127.0.0.1", port=0, markets=8, rate=1500.0, seed=3, key_dir=str(tmp_path / "a")
        )
    )
    await live.start()
    tickers = sorted(live.markets)[:5]
    out = tmp_path / "rec.jsonl"
    try:
        env = dict(
            os.environ,
            KALSHI_API_KEY_ID=live.key_id,
            KALSHI_PRIVATE_KEY_PATH=live.private_key_path,
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "marketpulse", "record", "--url", live.ws_url,
            "--markets", ",".join(tickers), "--out", str(out), "--duration", "4",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await until(lambda: live.connections >= 1, 20, "the recorder to connect")
        await asyncio.sleep(1.5)
        live.pause()  # the last recorded state is then the live state
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        expected = {t: live.book_levels(t) for t in tickers}
    finally:
        await live.stop()

    # The recording alone rebuilds the live books exactly.
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) > 100
    offline = KalshiProtocol(tickers, CHANNELS)
    offline.connection_made()
    offline.data_to_send()
    for line in lines:
        offline.receive_data(line["frame"])
    assert offline.stats.gaps == 0 and offline.stats.malformed == 0
    assert offline.stats.deltas > 50
    assert {t: offline.books[t].levels() for t in tickers} == expected

    # A second simulator replays it (fast); a feed on it ends with the same books.
    replay = simulator.Simulator(
        simulator.SimulatorConfig(
            host="127.0.0.1",
            port=0,
            seed=3,
            key_dir=str(tmp_path / "b"),
            replay=str(out),
            speed=20.0,
        )
    )
    await replay.start()
    try:
        assert set(tickers) <= set(replay.markets)
        creds = KalshiCredentials.from_file(replay.key_id, replay.private_key_path)
        async with KalshiFeed(replay.ws_url, creds, tickers, reconnect_delay=0.05) as feed:
            await until(lambda: replay.replay_source.done, 30, "the replay to finish")
            await until(
                lambda: all(
                    feed.books[t].valid and feed.books[t].levels() == expected[t] for t in tickers
                ),
                20,
                "the replayed books",
            )
            assert all(replay.book_levels(t) == expected[t] for t in tickers)
    finally:
        await replay.stop()
