"""marketpulse.reactive: a Convex-compatible reactive backend, in Python.

Write functions with :class:`FunctionModule`, declare tables with :class:`Schema`, and run
them with :class:`marketpulse.reactive.engine.Engine` (see docs/interfaces.md).
"""

from __future__ import annotations

from .engine import ActionCtx, MutationCtx, QueryCtx
from .errors import ArgumentValidationError, ConvexError
from .functions import FunctionModule, FunctionSpec
from .schema import Schema, Table
from .values import Int64

__all__ = [
    "ActionCtx",
    "ArgumentValidationError",
    "ConvexError",
    "FunctionModule",
    "FunctionSpec",
    "Int64",
    "MutationCtx",
    "QueryCtx",
    "Schema",
    "Table",
]
