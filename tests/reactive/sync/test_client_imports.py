"""The worker's store client is light: importing it loads no engine, storage or server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "marketpulse.reactive.engine",
    "marketpulse.reactive.persistence",
    "sqlite3",
    "marketpulse.reactive.gateway",
    "marketpulse.reactive.server",
    "starlette",
    "uvicorn",
)


def modules_loaded_by(module: str) -> set[str]:
    """The modules a fresh interpreter holds after importing ``module``."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout))


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
