"""The market data app: the ``marketData`` functions module on the reactive store.

``marketpulse serve`` loads ``marketpulse.marketdata.functions`` by default. The public queries
(getPrice, getOrderbook, getRecentTrades, listMarkets, getMarket, getCandles, getStreamStatus)
and the internal mutations the worker writes through (applyUpdates, upsertMarkets,
reportStreamStatus, cleanup) are described in docs/interfaces.md §5; the JSON Schemas of the
query results are in :data:`RESULT_SCHEMAS`.

Names are imported on first use (see ``marketpulse._lazy``), so the worker, which needs only the
app's shared bounds (:mod:`marketpulse.marketdata.limits`), loads no functions and no engine.
"""

from typing import TYPE_CHECKING

from marketpulse._lazy import lazy_import

__all__ = ["RESULT_SCHEMAS", "marketData", "schema"]

if TYPE_CHECKING:
    from .functions import marketData, schema
    from .schemas import RESULT_SCHEMAS
else:
    lazy_import(
        globals(),
        {"marketData": ".functions", "schema": ".functions", "RESULT_SCHEMAS": ".schemas"},
    )
