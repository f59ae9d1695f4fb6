"""TypeScript declarations of a store's functions, for the official ``convex`` npm client.

``generate(modules)`` returns ``api.d.ts`` (argument and result types of every function, from
the Python signatures, or from published JSON Schemas of results) and ``api.js``, laid out as
Convex's generated ``_generated/api`` is, so ``useQuery(api.messages.list, { channel })``
is type-checked against the Python code. ``marketpulse codegen`` writes them.
"""

from marketpulse.reactive.codegen._api import (
    API_JS,
    FunctionInfo,
    GeneratedApi,
    describe_modules,
    generate,
)
from marketpulse.reactive.codegen._hints import TypeMapper, args_type
from marketpulse.reactive.codegen._schema import schema_to_ts
from marketpulse.reactive.codegen._ts import render

__all__ = [
    "API_JS",
    "FunctionInfo",
    "GeneratedApi",
    "TypeMapper",
    "args_type",
    "describe_modules",
    "generate",
    "render",
    "schema_to_ts",
]
