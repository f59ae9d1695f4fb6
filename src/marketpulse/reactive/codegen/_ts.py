"""A small TypeScript type model and its printer.

Types are built as trees (so unions can be flattened and deduplicated, and long object types
broken over lines) and printed the way Convex's generated ``api.d.ts`` reads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

__all__ = [
    "TS_ANY",
    "TS_BIGINT",
    "TS_BOOLEAN",
    "TS_NEVER",
    "TS_NULL",
    "TS_NUMBER",
    "TS_STRING",
    "TS_UNKNOWN",
    "TsArray",
    "TsGeneric",
    "TsIntersection",
    "TsLiteral",
    "TsObject",
    "TsProperty",
    "TsRecord",
    "TsRef",
    "TsTuple",
    "TsType",
    "property_key",
    "render",
    "union",
]

_IDENT = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_WIDTH = 72


class TsType:
    """Base of every TypeScript type node."""


@dataclass(frozen=True)
class TsRef(TsType):
    """A named type: a primitive (``string``) or a reference (``ArrayBuffer``)."""

    name: str


@dataclass(frozen=True)
class TsLiteral(TsType):
    """A literal type: ``"buy"``, ``3``, ``true``."""

    value: str | int | float | bool


@dataclass(frozen=True)
class TsArray(TsType):
    """``Array<T>``."""

    item: TsType


@dataclass(frozen=True)
class TsTuple(TsType):
    """``[A, B]``."""

    items: tuple[TsType, ...]


@dataclass(frozen=True)
class TsRecord(TsType):
    """``Record<string, V>``."""

    value: TsType


@dataclass(frozen=True)
class TsGeneric(TsType):
    """``Name<A, B>``, broken one argument a line when long (as Convex's codegen prints it)."""

    name: str
    args: tuple[TsType, ...]


@dataclass(frozen=True)
class TsProperty:
    """One property of an object type."""

    name: str
    type: TsType
    optional: bool = False
    doc: str | None = None


@dataclass(frozen=True)
class TsObject(TsType):
    """``{ a: A; b?: B }``."""

    properties: tuple[TsProperty, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class TsUnion(TsType):
    """``A | B``; build with :func:`union`."""

    members: tuple[TsType, ...]


@dataclass(frozen=True)
class TsIntersection(TsType):
    """``A & B``: a path that is both a function and a namespace (``api.a.b`` when a module ``a``
    has a function ``b`` and a module ``a/b`` exists)."""

    members: tuple[TsType, ...]


TS_STRING = TsRef("string")
TS_NUMBER = TsRef("number")
TS_BOOLEAN = TsRef("boolean")
TS_BIGINT = TsRef("bigint")
TS_NULL = TsRef("null")
TS_ANY = TsRef("any")
TS_UNKNOWN = TsRef("unknown")
TS_NEVER = TsRef("never")


def union(*members: TsType) -> TsType:
    """A flattened, deduplicated union; ``any`` absorbs everything, ``null`` goes last."""
    flat: list[TsType] = []
    for m in members:
        for part in m.members if isinstance(m, TsUnion) else (m,):
            if part == TS_ANY:
                return TS_ANY
            if part != TS_NEVER and part not in flat:
                flat.append(part)
    if not flat:
        return TS_NEVER
    if TS_NULL in flat:
        flat.remove(TS_NULL)
        flat.append(TS_NULL)
    return flat[0] if len(flat) == 1 else TsUnion(tuple(flat))


def property_key(name: str) -> str:
    """A property name as TypeScript needs it: bare if an identifier, else quoted."""
    return name if _IDENT.match(name) else json.dumps(name)


def _literal(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _doc_lines(doc: str, pad: str) -> list[str]:
    text = doc.replace("*/", "*\\/").strip()
    lines = text.splitlines()
    if len(lines) == 1:
        return [f"{pad}/** {lines[0]} */"]
    return [f"{pad}/**", *[f"{pad} * {line}".rstrip() for line in lines], f"{pad} */"]


def _inline(t: TsType) -> str:
    """The one-line form."""
    if isinstance(t, TsRef):
        return t.name
    if isinstance(t, TsLiteral):
        return _literal(t.value)
    if isinstance(t, TsArray):
        return f"Array<{_inline(t.item)}>"
    if isinstance(t, TsTuple):
        return "[" + ", ".join(_inline(i) for i in t.items) + "]"
    if isinstance(t, TsRecord):
        return f"Record<string, {_inline(t.value)}>"
    if isinstance(t, TsUnion):
        return " | ".join(_inline(m) for m in t.members)
    if isinstance(t, TsIntersection):
        return " & ".join(_inline(m) for m in t.members)
    if isinstance(t, TsGeneric):
        return f"{t.name}<" + ", ".join(_inline(a) for a in t.args) + ">"
    if isinstance(t, TsObject):
        if not t.properties:
            return "{}"
        props = "; ".join(
            f"{property_key(p.name)}{'?' if p.optional else ''}: {_inline(p.type)}"
            for p in t.properties
        )
        return "{ " + props + " }"
    raise TypeError(f"not a TypeScript type node: {t!r}")


def render(t: TsType, indent: int = 0) -> str:
    """Print a type, breaking object types over lines when they would not fit.

    Args:
        t: the type.
        indent: the indentation (spaces) of the line the type starts on.
    """
    one_line = _inline(t)
    has_docs = _has_docs(t)
    if not has_docs and len(one_line) + indent <= _WIDTH:
        return one_line
    pad = " " * indent
    inner = " " * (indent + 2)
    if isinstance(t, TsObject) and t.properties:
        lines = ["{"]
        for p in t.properties:
            if p.doc:
                lines.extend(_doc_lines(p.doc, inner))
            key = f"{property_key(p.name)}{'?' if p.optional else ''}"
            lines.append(f"{inner}{key}: {render(p.type, indent + 2)};")
        lines.append(pad + "}")
        return "\n".join(lines)
    if isinstance(t, TsGeneric):
        args = [f"{inner}{render(a, indent + 2)}," for a in t.args]
        return "\n".join([f"{t.name}<", *args, pad + ">"])
    if isinstance(t, TsArray):
        return f"Array<{render(t.item, indent)}>"
    if isinstance(t, TsRecord):
        return f"Record<string, {render(t.value, indent)}>"
    if isinstance(t, TsUnion):
        return " | ".join(render(m, indent) for m in t.members)
    if isinstance(t, TsIntersection):
        return " & ".join(render(m, indent) for m in t.members)
    if isinstance(t, TsTuple):
        return "[" + ", ".join(render(i, indent) for i in t.items) + "]"
    return one_line


def _has_docs(t: TsType) -> bool:
    if isinstance(t, TsObject):
        return any(p.doc or _has_docs(p.type) for p in t.properties)
    if isinstance(t, TsArray):
        return _has_docs(t.item)
    if isinstance(t, TsRecord):
        return _has_docs(t.value)
    if isinstance(t, TsUnion | TsIntersection):
        return any(_has_docs(m) for m in t.members)
    if isinstance(t, TsTuple):
        return any(_has_docs(i) for i in t.items)
    if isinstance(t, TsGeneric):
        return any(_has_docs(a) for a in t.args)
    return False
