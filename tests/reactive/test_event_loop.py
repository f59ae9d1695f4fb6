"""``serve`` runs on uvloop with ``MARKETPULSE_UVLOOP=1`` (opt-in), else on asyncio's loop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from marketpulse.reactive._cli import event_loop_factory
from marketpulse.reactive.sync.client import LightSyncClient
from marketpulse.testing import AdminClient, StoreProcess

uvloop = pytest.importorskip("uvloop")


def test_the_factory_follows_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MARKETPULSE_UVLOOP", raising=False)
    assert event_loop_factory() is None
    for on in ("1", "on", "true", " Yes "):
        monkeypatch.setenv("MARKETPULSE_UVLOOP", on)
        assert event_loop_factory() is uvloop.new_event_loop
    # Profiling times asyncio's own callback handles: it needs asyncio's loop.
    assert event_loop_factory(profiling=True) is None
    for off in ("0", "off", "false", " No ", ""):
        monkeypatch.setenv("MARKETPULSE_UVLOOP", off)
        assert event_loop_factory() is None
    monkeypatch.setenv("MARKETPULSE_UVLOOP", "fast")
    with pytest.raises(RuntimeError, match="must be 1 or 0"):
        event_loop_factory()


def _loop_module(log: Path) -> str:
    for line in log.read_text().splitlines():
        if line.startswith("{") and '"store listening"' in line:
            return str(json.loads(line)["loop"])
    raise AssertionError("no 'store listening' line in the log")


@pytest.mark.parametrize(("flag", "module"), [("1", "uvloop"), ("0", "asyncio.unix_events")])
def test_serve_pushes_commits_on_either_loop(tmp_path: Path, flag: str, module: str) -> None:
    """The sync socket, HTTP mutations and the push between them work on both loops."""
    db = tmp_path / "s.sqlite"
    book = {"ticker": "UV-1", "bids": [[0.4, 3.0]], "asks": [[0.45, 2.0]], "ts": 1.0, "valid": True}

    async def run(store: StoreProcess) -> None:
        client = await LightSyncClient(LightSyncClient.ws_url(store.url)).connect()
        try:
            q = await client.subscribe("marketData:getOrderbook", {"ticker": "UV-1"})
            assert await client.wait_for(q, timeout=30) is None
            with AdminClient(store.url, store.admin_key) as admin:
                batch = {"prices": [], "books": [book], "trades": []}
                await asyncio.to_thread(admin.mutation, "marketData:applyUpdates", {"batch": batch})
            pushed = await client.wait_for(q, lambda v: v is not None, timeout=30)
            assert pushed["bids"][0][0] == pytest.approx(0.4)
        finally:
            await client.close()

    with StoreProcess(db, env={"MARKETPULSE_UVLOOP": flag}) as store:
        asyncio.run(run(store))
    assert _loop_module(db.with_suffix(".log")).startswith(module)
