"""The engine: transactions, in-memory indexes, read sets and subscriptions."""

from __future__ import annotations

from ._context import ActionCtx, Auth, Identity, MutationCtx, QueryCtx
from ._database import DatabaseReader, DatabaseWriter, IndexRange, Query
from ._engine import CommitTimings, Engine, QueryListener, SharedQuery
from ._results import FunctionResult

__all__ = [
    "ActionCtx",
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
    "SharedQuery",
]
