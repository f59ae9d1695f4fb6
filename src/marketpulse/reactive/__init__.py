"""marketpulse.reactive: a Convex-compatible reactive backend, in Python.

Write functions with :class:`FunctionModule`, declare tables with :class:`Schema`, and run
them with :class:`marketpulse.reactive.engine.Engine` (see docs/interfaces.md).

Names are imported on first use (see ``marketpulse._lazy``), so a light submodule such as the
sync wire client (``marketpulse.reactive.sync.client``) loads no engine or storage.
"""

from typing import TYPE_CHECKING

from marketpulse._lazy import lazy_import

__all__ = [
    "ActionCtx",
    "ArgumentValidationError",
    "ConvexError",
    "Crons",
    "FunctionModule",
    "FunctionSpec",
    "Int64",
    "MutationCtx",
    "PaginationOptions",
    "PaginationResult",
    "QueryCtx",
    "Schema",
    "Table",
]

if TYPE_CHECKING:
    from .crons import Crons
    from .engine import ActionCtx, MutationCtx, QueryCtx
    from .errors import ArgumentValidationError, ConvexError
    from .functions import FunctionModule, FunctionSpec, PaginationOptions, PaginationResult
    from .schema import Schema, Table
    from .values import Int64
else:
    lazy_import(
        globals(),
        {
            "ActionCtx": ".engine",
            "MutationCtx": ".engine",
            "QueryCtx": ".engine",
            "ArgumentValidationError": ".errors",
            "ConvexError": ".errors",
            "Crons": ".crons",
            "FunctionModule": ".functions",
            "FunctionSpec": ".functions",
            "PaginationOptions": ".functions",
            "PaginationResult": ".functions",
            "Schema": ".schema",
            "Table": ".schema",
            "Int64": ".values",
        },
    )
