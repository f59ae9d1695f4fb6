"""The worker's store client is light: importing it loads no engine, storage or server."""

from __future__ import annotations

import pytest

from loaded import modules_loaded_by

HEAVY = (
    "marketpulse.reactive.engine",
    "marketpulse.reactive.persistence",
    "sqlite3",
    "marketpulse.reactive.gateway",
    "marketpulse.reactive.server",
    "starlette",
    "uvicorn",
)


@pytest.mark.parametrize(
    "module",
    [
        "marketpulse.reactive.sync.client",
        "marketpulse.pipeline._store",
        "marketpulse.pipeline.worker",
    ],
)
def test_importing_the_wire_client_loads_no_engine_storage_or_server(module: str) -> None:
    loaded = modules_loaded_by(module)
    assert module in loaded
    assert sorted(loaded.intersection(HEAVY)) == []
