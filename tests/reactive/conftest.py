"""Fixtures for the reactive store: an engine over a real SQLite file and the example app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from marketpulse.reactive.engine import Engine
from marketpulse.reactive.limits import RunLimits
from marketpulse.reactive.persistence import open_persistence

from .example_app import MODULES


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite3"


@pytest.fixture
async def engine(db_path: Path) -> AsyncIterator[Engine]:
    eng = await Engine.open(
        open_persistence(f"sqlite:{db_path}"),
        MODULES,
        # The whole time limit as the inline slice: a re-run is due right after its commit
        # however slow the host (a loaded CI host once took a 5 ms slice and left a re-run to a
        # later turn). Pacing has its own tests, with their own small slices.
        limits=RunLimits(
            query_time_limit=0.5,
            mutation_time_limit=0.5,
            max_result_bytes=100_000,
            inline_query_s=0.5,
        ),
    )
    try:
        yield eng
    finally:
        await eng.close()


class Recorder:
    """A query listener that records every update it receives."""

    def __init__(self) -> None:
        self.updates: list[tuple[int, object]] = []

    def on_query_updated(self, query: object) -> None:
        self.updates.append((query.version, query.result.value))  # type: ignore[attr-defined]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
