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


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/hook", "http://127.0.0.1:abc/hook"])
async def test_a_delivery_to_a_url_httpx_cannot_use_is_a_failure_not_a_crash(url: str) -> None:
    # Such a URL is refused when set; one stored before must still fail as a delivery (the
    # action records it and retries), never raise out of the action.
    assert not _webhook.well_formed(url)
    outcome = await _webhook.post_json(url, {"x": 1})
    assert outcome is not None and outcome != _webhook.NOT_ALLOWED
