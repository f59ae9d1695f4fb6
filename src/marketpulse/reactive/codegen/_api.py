"""The generated ``api.d.ts`` and ``api.js``, in the layout of Convex's own codegen.

``api.d.ts`` declares ``api`` (public functions) and ``internal`` (internal ones) as nested
objects of ``FunctionReference<kind, visibility, args, result>``, one level per module path
segment, so ``useQuery(api.messages.list, { channel })`` type-checks its arguments and
result. ``api.js`` is Convex's runtime stand-in: ``anyApi`` from ``convex/server``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from marketpulse.reactive.codegen._hints import TypeMapper, args_type
from marketpulse.reactive.codegen._schema import schema_to_ts
from marketpulse.reactive.codegen._ts import (
    TsGeneric,
    TsIntersection,
    TsLiteral,
    TsObject,
    TsProperty,
    TsType,
    render,
)
from marketpulse.reactive.functions import FunctionModule

__all__ = ["API_JS", "FunctionInfo", "GeneratedApi", "describe_modules", "generate"]

_HEADER = """/* eslint-disable */
/**
 * Generated `api` utility.
 *
 * THIS CODE IS AUTOMATICALLY GENERATED.
 *
 * To regenerate, run `marketpulse codegen`.
 * @module
 */
"""

API_JS = (
    _HEADER
    + """
import { anyApi } from "convex/server";

/**
 * A utility for referencing Convex functions in your app's API.
 *
 * Usage:
 * ```js
 * const myFunctionReference = api.myModule.myFunction;
 * ```
 */
export const api = anyApi;
export const internal = anyApi;
"""
)


@dataclass(frozen=True)
class FunctionInfo:
    """One function as the generated declarations describe it."""

    module: str
    name: str
    kind: str
    visibility: str
    args: TsType
    returns: TsType
    doc: str | None
    result_from: str  # "schema" or "hints"

    @property
    def path(self) -> str:
        """The function's path, ``module:name``."""
        return f"{self.module}:{self.name}"


@dataclass(frozen=True)
class GeneratedApi:
    """The generated files and what could only be typed loosely."""

    files: dict[str, str]
    functions: list[FunctionInfo]
    loose: dict[str, list[str]]


def _summary(handler: Callable[..., Any]) -> str | None:
    """The docstring's first paragraph, with reST ``literals`` as Markdown `literals`."""
    doc = inspect.getdoc(handler)
    if not doc:
        return None
    first = " ".join(doc.split("\n\n", 1)[0].split())
    return re.sub(r"``([^`]+)``", r"`\1`", first) or None


def describe_modules(
    modules: Iterable[FunctionModule],
    result_schemas: Mapping[str, Any] | None = None,
) -> tuple[list[FunctionInfo], dict[str, list[str]]]:
    """Every function of ``modules`` with its TypeScript argument and result types.

    Args:
        modules: the functions modules, as ``marketpulse serve --functions`` loads them.
        result_schemas: function path -> JSON Schema of its result; where given it is the
            result type (it is the published contract), else the return hint is.

    Returns:
        The functions sorted by path, and per path what was mapped to ``any``.
    """
    schemas = dict(result_schemas or {})
    out: list[FunctionInfo] = []
    loose: dict[str, list[str]] = {}
    for module in modules:
        for name, spec in module.functions.items():
            mapper = TypeMapper()
            args = args_type(spec, mapper)
            path = spec.path
            if path in schemas:
                returns, source = schema_to_ts(schemas[path], mapper), "schema"
            else:
                results = TypeMapper(result=True)
                returns, source = results.map(spec.return_hint), "hints"
                mapper.loose.extend(w for w in results.loose if w not in mapper.loose)
            out.append(
                FunctionInfo(
                    module=module.name,
                    name=name,
                    kind=spec.kind,
                    visibility=spec.visibility,
                    args=args,
                    returns=returns,
                    doc=_summary(spec.handler),
                    result_from=source,
                )
            )
            if mapper.loose:
                loose[path] = list(mapper.loose)
    out.sort(key=lambda f: (f.module, f.name))
    return out, loose


_SELF = object()
"""The key of a namespace's own function, when a path is both (module ``a``'s ``b`` and module
``a/b``); never a name."""


def _tree(functions: list[FunctionInfo]) -> TsObject:
    """Nest functions by module path segments ("a/b" -> a.b) into one object type.

    A path that is both a function and a module (``a:b`` and ``a/b:c``) is both at once, as the
    clients' ``anyApi`` resolves it: ``FunctionReference<...> & { c: ... }``.
    """
    root: dict[Any, Any] = {}
    for f in functions:
        node = root
        for segment in f.module.split("/"):
            child = node.get(segment)
            if isinstance(child, FunctionInfo):
                child = node[segment] = {_SELF: child}
            node = node.setdefault(segment, {}) if child is None else child
        if isinstance(node.get(f.name), dict):
            node[f.name][_SELF] = f
        else:
            node[f.name] = f

    def ref(f: FunctionInfo) -> TsType:
        return TsGeneric(
            "FunctionReference", (TsLiteral(f.kind), TsLiteral(f.visibility), f.args, f.returns)
        )

    def build(node: dict[Any, Any]) -> TsObject:
        props = []
        for key in sorted(k for k in node if k is not _SELF):
            value = node[key]
            if isinstance(value, FunctionInfo):
                props.append(TsProperty(key, ref(value), doc=value.doc))
            elif isinstance(own := value.get(_SELF), FunctionInfo):
                props.append(TsProperty(key, TsIntersection((ref(own), build(value))), doc=own.doc))
            else:
                props.append(TsProperty(key, build(value)))
        return TsObject(tuple(props))

    return build(root)


def _declare(name: str, functions: list[FunctionInfo], doc: str) -> str:
    body = render(_tree(functions)) if functions else "{}"
    return f"{doc}\nexport declare const {name}: {body};\n"


def generate(
    modules: Iterable[FunctionModule],
    result_schemas: Mapping[str, Any] | None = None,
) -> GeneratedApi:
    """``api.d.ts`` and ``api.js`` for ``modules``."""
    functions, loose = describe_modules(modules, result_schemas)
    public = [f for f in functions if f.visibility == "public"]
    internal = [f for f in functions if f.visibility != "public"]
    d_ts = "\n".join(
        [
            _HEADER,
            'import type { FunctionReference } from "convex/server";',
            "",
            _declare(
                "api",
                public,
                "/**\n * A utility for referencing the public functions of the store's API.\n"
                " *\n * Usage:\n * ```js\n * const myFunctionReference = api.myModule.myFunction;\n"
                " * ```\n */",
            ),
            _declare(
                "internal",
                internal,
                "/**\n * A utility for referencing internal functions (admin key only).\n */",
            ),
        ]
    )
    return GeneratedApi(
        files={"api.d.ts": d_ts, "api.js": API_JS}, functions=functions, loose=loose
    )
