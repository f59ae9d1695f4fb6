"""``MARKETPULSE_PROFILE``: a real ``serve`` writes its profile and its longest callbacks."""

from __future__ import annotations

from pathlib import Path

import httpx

from marketpulse.testing import StoreProcess


def test_serve_writes_a_profile_and_its_longest_callbacks(tmp_path: Path) -> None:
    out = tmp_path / "profile.txt"
    with StoreProcess(tmp_path / "s.sqlite", env={"MARKETPULSE_PROFILE": str(out)}) as store:
        for _ in range(20):
            assert httpx.get(store.url + "/health", timeout=30).status_code == 200
    # Written when the server stops: a call tree of the serving thread...
    assert "serve" in out.read_text()
    # ...and the loop's callbacks: how many, their CPU, the costliest.
    slow = Path(str(out) + ".slow").read_text().splitlines()
    assert slow[0].split()[0].isdigit() and int(slow[0].split()[0]) > 20, slow[:3]
    assert slow[1].startswith("CPU ms of the longest") and slow[3].startswith("by kind")


def test_without_the_variable_nothing_is_written(tmp_path: Path) -> None:
    with StoreProcess(tmp_path / "s.sqlite") as store:
        assert httpx.get(store.url + "/health", timeout=30).status_code == 200
    assert not list(tmp_path.glob("*.slow"))
