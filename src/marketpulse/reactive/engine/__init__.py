"""The engine: transactions, in-memory indexes, read sets and subscriptions.

Names are imported on first use (see ``marketpulse._lazy``): the contexts a function module
needs (``QueryCtx`` and the rest) load without the engine proper and its storage.
"""

from typing import TYPE_CHECKING

from marketpulse._lazy import lazy_import

__all__ = [
    "ActionCtx",
    "ActionScheduler",
    "Auth",
    "CommitTimings",
    "DatabaseReader",
    "DatabaseWriter",
    "Engine",
    "FunctionResult",
    "Identity",
    "IndexRange",
    "MutationCtx",
    "Query",
    "QueryCtx",
    "QueryListener",
    "Scheduler",
    "SchedulerRunner",
    "SharedQuery",
    "SystemReader",
]

if TYPE_CHECKING:
    from ._context import ActionCtx, Auth, Identity, MutationCtx, QueryCtx
    from ._database import DatabaseReader, DatabaseWriter, IndexRange, Query, SystemReader
    from ._engine import CommitTimings, Engine, QueryListener, SharedQuery
    from ._results import FunctionResult
    from ._runner import SchedulerRunner
    from ._scheduler import ActionScheduler, Scheduler
else:
    lazy_import(
        globals(),
        {
            "ActionCtx": "._context",
            "Auth": "._context",
            "Identity": "._context",
            "MutationCtx": "._context",
            "QueryCtx": "._context",
            "DatabaseReader": "._database",
            "DatabaseWriter": "._database",
            "IndexRange": "._database",
            "Query": "._database",
            "SystemReader": "._database",
            "ActionScheduler": "._scheduler",
            "Scheduler": "._scheduler",
            "SchedulerRunner": "._runner",
            "CommitTimings": "._engine",
            "Engine": "._engine",
            "QueryListener": "._engine",
            "SharedQuery": "._engine",
            "FunctionResult": "._results",
        },
    )
