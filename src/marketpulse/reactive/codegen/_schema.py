"""JSON Schema (the subset a functions module uses to describe results) -> TypeScript types.

Functions whose hints are loose (``dict[str, Any]``) can publish their result shapes as JSON
Schemas; these are then the precise source of the generated types.
"""

from __future__ import annotations

from typing import Any

from marketpulse.reactive.codegen._hints import TypeMapper
from marketpulse.reactive.codegen._ts import (
    TS_ANY,
    TS_BOOLEAN,
    TS_NULL,
    TS_NUMBER,
    TS_STRING,
    TsArray,
    TsLiteral,
    TsObject,
    TsProperty,
    TsRecord,
    TsRef,
    TsTuple,
    TsType,
    union,
)

__all__ = ["schema_to_ts"]

_PRIMITIVES: dict[str, TsType] = {
    "string": TS_STRING,
    "number": TS_NUMBER,
    "integer": TS_NUMBER,
    "boolean": TS_BOOLEAN,
    "null": TS_NULL,
}


def schema_to_ts(schema: Any, mapper: TypeMapper) -> TsType:
    """The TypeScript type of the values ``schema`` accepts (``any`` where it cannot say).

    Supported: ``type`` (one or a list), ``enum``, ``const``, ``oneOf``/``anyOf``, arrays with
    ``items`` or ``prefixItems`` (a fixed-length tuple), objects with ``properties``/``required``
    and ``additionalProperties``. ``$ref`` and other keywords map to ``any`` and are reported.
    """
    if schema is True or schema == {}:
        return mapper.note("an unconstrained schema")
    if not isinstance(schema, dict):
        return mapper.note(f"schema {schema!r}")
    if "const" in schema:
        return _literal(schema["const"], mapper)
    if "enum" in schema:
        return union(*(_literal(v, mapper) for v in schema["enum"]))
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return union(*(schema_to_ts(s, mapper) for s in schema[key]))
    if "$ref" in schema:
        return mapper.note(f"$ref {schema['$ref']}")
    kind = schema.get("type")
    if isinstance(kind, list):
        return union(*(schema_to_ts({**schema, "type": k}, mapper) for k in kind))
    if kind == "array":
        return _array(schema, mapper)
    if kind == "object" or "properties" in schema:
        return _object(schema, mapper)
    if isinstance(kind, str) and kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    return mapper.note(f"schema without a type: {sorted(schema)}")


def _literal(value: Any, mapper: TypeMapper) -> TsType:
    if value is None:
        return TS_NULL
    if isinstance(value, str | bool | int | float):
        return TsLiteral(value)
    return mapper.note(f"literal {value!r}")


def _array(schema: dict[str, Any], mapper: TypeMapper) -> TsType:
    prefix = schema.get("prefixItems")
    if isinstance(prefix, list):
        fixed = schema.get("minItems") == len(prefix) and (
            schema.get("maxItems") == len(prefix) or schema.get("items") is False
        )
        if fixed:
            return TsTuple(tuple(schema_to_ts(s, mapper) for s in prefix))
        return TsArray(union(*(schema_to_ts(s, mapper) for s in prefix)))
    items = schema.get("items")
    if items is None:
        return TsArray(mapper.note("array without items"))
    return TsArray(schema_to_ts(items, mapper))


def _object(schema: dict[str, Any], mapper: TypeMapper) -> TsType:
    properties: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    extra = schema.get("additionalProperties", True)
    if not properties:
        if extra is False:
            return TsRef("Record<string, never>")
        return TsRecord(TS_ANY if extra is True else schema_to_ts(extra, mapper))
    return TsObject(
        tuple(
            TsProperty(
                name,
                schema_to_ts(sub, mapper),
                optional=name not in required,
                doc=sub.get("description") if isinstance(sub, dict) else None,
            )
            for name, sub in properties.items()
        )
    )
