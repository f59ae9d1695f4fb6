"""The operator's webhook allow-list as ``marketpulse serve`` takes it: flag or environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from marketpulse.marketdata import _webhook
from marketpulse.testing import StoreProcess


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_malformed_allow_list_stops_serve_with_a_clear_error(tmp_path: Path, how: str) -> None:
    bad = "10.0.0.0/8,not a host!"
    store = StoreProcess(
        tmp_path / "store.sqlite",
        log_path=tmp_path / "store.log",
        extra=("--webhook-allow", bad) if how == "flag" else (),
        env={_webhook.ALLOW_ENV: bad} if how == "env" else {},
    )
    with pytest.raises(RuntimeError, match="exited"):
        store.start()
    assert "webhook allow-list: 'not a host!' is not a host or network" in store.log()


def test_a_good_allow_list_from_the_flag_serves(tmp_path: Path) -> None:
    with StoreProcess(
        tmp_path / "store.sqlite",
        log_path=tmp_path / "store.log",
        extra=("--webhook-allow", "hooks.example.com,10.0.0.0/8"),
    ) as store:
        assert store.poll() is None
