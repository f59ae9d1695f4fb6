"""Served beside the market-data app by the dashboard's user test: slows ``watchlists:add`` and
``watchlists:remove`` down (and makes them fail on demand), so the test can see the dashboard's
star change before the mutation's answer and roll back after a refusal.

``SLOW_WATCHLISTS_S``: seconds each of them sleeps (the store's loop is blocked meanwhile, as a
slow server's would be for this client). ``SLOW_WATCHLISTS_FAIL_FILE``: when this file exists,
the tickers it lists are refused.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from marketpulse.marketdata import watchlists as _watchlists
from marketpulse.reactive import ConvexError, FunctionModule, QueryCtx

slowdown = FunctionModule("slowdown")

_real_entry = _watchlists._entry


def _slow_entry(db: Any, user: str, ticker: str) -> Any:
    time.sleep(float(os.environ.get("SLOW_WATCHLISTS_S", "0.8")))
    fail = os.environ.get("SLOW_WATCHLISTS_FAIL_FILE")
    if fail and Path(fail).is_file() and ticker in Path(fail).read_text().split():
        raise ConvexError({"code": "Refused", "message": f"refused {ticker} (test)"})
    return _real_entry(db, user, ticker)


_watchlists._entry = _slow_entry


@slowdown.query
def delay(ctx: QueryCtx) -> float:
    """The configured delay, so the test can check this module is loaded."""
    return float(os.environ.get("SLOW_WATCHLISTS_S", "0.8"))
