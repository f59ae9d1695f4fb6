"""Shared fixtures of the pipeline tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from marketpulse.testing import LocalSystem


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalSystem]:
    """A real ``marketpulse serve`` on a SQLite file in the test's temporary folder."""
    with LocalSystem(tmp_path) as system:
        system.start_store()
        yield system
