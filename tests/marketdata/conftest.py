"""A real engine (SQLite in a temp dir) with the marketData module, and helpers to drive it.

``Store`` runs functions as the worker (admin) or as an anonymous client does, and subscribes
listeners the way the sync layer does; the engine counts each shared query's runs
(``SharedQuery.runs``), so the read-set tests assert re-runs and not only results.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from marketpulse.marketdata.functions import marketData
from marketpulse.reactive.engine import Engine, Identity, SharedQuery
from marketpulse.reactive.persistence import open_persistence


class Listener:
    """Counts the updates pushed for one subscription."""

    def __init__(self) -> None:
        self.updates = 0
        self.values: list[Any] = []

    def on_query_updated(self, q: Any) -> None:
        self.updates += 1
        self.values.append(q.result.value)


class Store:
    """Drives one engine the way the worker and the clients do."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.admin = Identity.admin()
        self.anon = Identity.anonymous()

    async def mutate(self, name: str, **args: Any) -> Any:
        r = await self.engine.run_mutation(f"marketData:{name}", args, self.admin)
        assert r.success, r.error_message
        return r.value

    async def mutate_error(self, name: str, identity: Any = None, **args: Any) -> str:
        r = await self.engine.run_mutation(f"marketData:{name}", args, identity or self.admin)
        assert not r.success, f"expected {name} to fail, got {r.value!r}"
        assert r.error_message
        return r.error_message

    async def apply(self, **batch: Any) -> dict[str, int]:
        result: dict[str, int] = await self.mutate("applyUpdates", batch=batch)
        return result

    def query(self, name: str, **args: Any) -> Any:
        r = self.engine.run_query(f"marketData:{name}", args, self.anon)
        assert r.success, r.error_message
        return r.value

    def query_error(self, name: str, **args: Any) -> str:
        r = self.engine.run_query(f"marketData:{name}", args, self.anon)
        assert not r.success, f"expected {name} to fail, got {r.value!r}"
        assert r.error_message
        return r.error_message

    def subscribe(self, name: str, **args: Any) -> tuple[SharedQuery, Listener]:
        listener = Listener()
        q = self.engine.subscribe(f"marketData:{name}", args, self.anon, listener)
        assert q.result.success, q.result.error_message
        return q, listener


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    engine = await Engine.open(open_persistence(f"sqlite:{tmp_path / 'store.db'}"), [marketData])
    try:
        yield Store(engine)
    finally:
        await engine.close()
