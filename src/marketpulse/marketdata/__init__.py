"""The market data app: the ``marketData`` functions module on the reactive store.

``marketpulse serve`` loads ``marketpulse.marketdata.functions`` by default. The public queries
(getPrice, getOrderbook, getRecentTrades, listMarkets, getMarket, getCandles, getStreamStatus)
and the internal mutations the worker writes through (applyUpdates, upsertMarkets,
reportStreamStatus, cleanup) are described in docs/interfaces.md §5; the JSON Schemas of the
query results are in :data:`RESULT_SCHEMAS`.
"""

from marketpulse.marketdata.functions import marketData, schema
from marketpulse.marketdata.schemas import RESULT_SCHEMAS

__all__ = ["RESULT_SCHEMAS", "marketData", "schema"]
