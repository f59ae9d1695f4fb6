"""Shared fixtures of the pipeline tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from marketpulse.pipeline._local import LocalSystem


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalSystem]:
    """A real ``marketpulse serve`` on a SQLite file in the test's temporary folder."""
    system = LocalSystem(tmp_path)
    system.start_store()
    yield system
    system.stop()
