"""Tables and indexes, declared in Python.

Every table has two built-in indexes: ``by_id`` (on ``_id``) and ``by_creation_time`` (on
``_creationTime``). A declared index on fields ``[a, b]`` orders documents by ``a``, then ``b``,
then ``_creationTime``, then ``_id`` (as Convex does), so index keys are unique.

Example::

    schema = Schema({"messages": Table(indexes={"by_channel": ["channel", "sentAt"]})})
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["BUILTIN_INDEXES", "IndexDef", "Schema", "SchemaError", "Table"]

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_SYSTEM_FIELDS = frozenset({"_id", "_creationTime"})


class SchemaError(ValueError):
    """An invalid table or index declaration."""


@dataclass(frozen=True)
class IndexDef:
    """One index of a table.

    Attributes:
        name: the index name used in ``with_index``.
        fields: the fields a range expression may name, in order (system fields included
            for built-in indexes, e.g. ``("_creationTime",)``).
        key_fields: every field that makes up the key, in order; the document ``_id`` is
            appended to the key when it is not already the last field.
    """

    name: str
    fields: tuple[str, ...]
    key_fields: tuple[str, ...]


BUILTIN_INDEXES: tuple[IndexDef, ...] = (
    IndexDef("by_id", ("_id",), ("_id",)),
    IndexDef("by_creation_time", ("_creationTime",), ("_creationTime", "_id")),
)


@dataclass(frozen=True)
class Table:
    """A table declaration.

    Args:
        indexes: index name -> list of (possibly dotted) field paths.
    """

    indexes: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def index_defs(self, table: str) -> dict[str, IndexDef]:
        """Validate the declared indexes and return them with the built-in ones.

        Raises:
            SchemaError: an index name or field list is invalid.
        """
        defs = {d.name: d for d in BUILTIN_INDEXES}
        for name, fields in self.indexes.items():
            where = f"index {name!r} of table {table!r}"
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise SchemaError(f"{where}: name must match {_NAME_RE.pattern}")
            if name in defs:
                raise SchemaError(f"{where}: the name is reserved for a built-in index")
            if isinstance(fields, str) or not fields:
                raise SchemaError(f"{where}: fields must be a non-empty list of field names")
            for f in fields:
                if not isinstance(f, str) or not _FIELD_RE.match(f):
                    raise SchemaError(f"{where}: invalid field {f!r}")
                if f in _SYSTEM_FIELDS:
                    raise SchemaError(f"{where}: {f} is added to every index automatically")
            if len(set(fields)) != len(fields):
                raise SchemaError(f"{where}: duplicate fields")
            defs[name] = IndexDef(name, tuple(fields), (*fields, "_creationTime", "_id"))
        return defs


@dataclass(frozen=True)
class Schema:
    """The tables of an app. Tables not declared here may still be used (built-in indexes only).

    Args:
        tables: table name -> :class:`Table`.
    """

    tables: Mapping[str, Table] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, table in self.tables.items():
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise SchemaError(f"table name {name!r} must match {_NAME_RE.pattern}")
            if not isinstance(table, Table):
                raise SchemaError(f"table {name!r} must be declared with Table(...)")
            table.index_defs(name)

    def merged(self, other: Schema) -> Schema:
        """Combine two schemas; a table declared in both must be declared identically.

        Raises:
            SchemaError: the two schemas disagree about a table.
        """
        tables = dict(self.tables)
        for name, table in other.tables.items():
            mine = tables.get(name)
            if mine is not None and mine.index_defs(name) != table.index_defs(name):
                raise SchemaError(f"table {name!r} is declared differently by two modules")
            tables[name] = table
        return Schema(tables)
