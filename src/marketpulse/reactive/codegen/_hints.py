"""Python type hints of function handlers -> TypeScript types, as the store encodes the values.

The mapping follows the store's Convex values (``marketpulse.reactive.values``): ``str`` ->
``string``, ``int``/``float`` -> ``number`` (plain ints travel as float64), ``Int64`` ->
``bigint``, ``bool`` -> ``boolean``, ``bytes`` -> ``ArrayBuffer``, ``None`` -> ``null``,
sequences -> ``Array<T>``, fixed tuples -> ``[A, B]``, ``dict[str, V]`` -> ``Record<string, V>``,
TypedDicts and pydantic models -> object types, ``Literal``/``Enum`` -> literal unions.
Anything else becomes ``any`` and is reported, so a loose hint is visible, never silently wrong.

A result hint is mapped with ``result=True``: a pydantic model or a set validates an argument
(from an object or an array) but is no Convex value a function can return (the store refuses
it), so there it is reported and ``any``, not the type of a value the client never receives.
"""

from __future__ import annotations

import collections.abc
import enum
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import typing_extensions

from marketpulse.reactive.codegen._ts import (
    TS_ANY,
    TS_BIGINT,
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
from marketpulse.reactive.functions import FunctionSpec
from marketpulse.reactive.values import Int64

__all__ = ["TypeMapper", "args_type"]

_SEQUENCES: tuple[Any, ...] = (
    list,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Set,
    collections.abc.MutableSet,
    collections.abc.Iterable,
    collections.abc.Collection,
)
_MAPPINGS: tuple[Any, ...] = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
# Sets validate an argument from an array, but are no Convex value to return.
_SETS: tuple[Any, ...] = (set, frozenset, collections.abc.Set, collections.abc.MutableSet)
# TypedDict key qualifiers, which include_extras keeps around the value type.
_QUALIFIERS: tuple[Any, ...] = tuple(
    q for q in (getattr(typing, n, None) for n in ("Required", "NotRequired", "ReadOnly")) if q
)


@dataclass
class TypeMapper:
    """Maps hints to TypeScript, collecting what it could only map to ``any``.

    ``result``: the hint is a function's result (see the module's docstring).
    """

    loose: list[str] = field(default_factory=list)
    result: bool = False
    _stack: list[Any] = field(default_factory=list)

    def note(self, what: str) -> TsType:
        """Record something mapped to ``any`` and return ``any``."""
        if what not in self.loose:
            self.loose.append(what)
        return TS_ANY

    def map(self, hint: Any) -> TsType:
        """The TypeScript type of values of ``hint``."""
        if hint is None or hint is type(None):
            return TS_NULL
        if hint is Any or hint is object:
            return self.note("Any")
        if isinstance(hint, typing.TypeVar):
            return self.note(f"type variable {hint.__name__}")
        supertype = getattr(hint, "__supertype__", None)
        if supertype is not None:  # typing.NewType
            return self.map(supertype)
        if type(hint).__name__ == "TypeAliasType":  # a `type X = ...` alias (3.12+)
            return self.map(hint.__value__)

        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin is typing.Annotated:
            return self.map(args[0])
        if origin in _QUALIFIERS:
            return self.map(args[0])
        if origin is typing.Literal:
            return union(*(TS_NULL if a is None else self._literal(a) for a in args))
        if origin is typing.Union or origin is types.UnionType:
            return union(*(self.map(a) for a in args))
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return TsArray(self.map(args[0]))
            if args == ((),):
                return TsTuple(())
            return TsTuple(tuple(self.map(a) for a in args)) if args else TsArray(TS_ANY)
        if self.result and origin in _SETS:
            return self.note(f"{_name(origin)} (no Convex value: return a list)")
        if origin in _SEQUENCES:
            return TsArray(self.map(args[0]) if args else self.note(f"bare {_name(origin)}"))
        if origin in _MAPPINGS:
            if args and args[0] is not str:
                return TsRecord(self.note(f"{_name(origin)} with non-string keys"))
            if not args:
                return TsRecord(self.note("bare dict"))
            return TsRecord(self.map(args[1]))

        if isinstance(hint, type):
            return self._class(hint)
        if isinstance(hint, str):
            return self.note(f"unresolved annotation {hint!r}")
        return self.note(f"unsupported hint {hint!r}")

    def _literal(self, value: Any) -> TsType:
        if isinstance(value, enum.Enum):
            value = value.value
        if isinstance(value, str | bool | int | float):
            return TsLiteral(value)
        return self.note(f"literal {value!r}")

    def _class(self, cls: type) -> TsType:
        # bool and Int64 are int subclasses: test them first.
        if issubclass(cls, bool):
            return TS_BOOLEAN
        if issubclass(cls, Int64):
            return TS_BIGINT
        if issubclass(cls, enum.Enum):
            return union(*(self._literal(m.value) for m in cls))
        if issubclass(cls, str):
            return TS_STRING
        if issubclass(cls, int | float):
            return TS_NUMBER
        if issubclass(cls, bytes | bytearray | memoryview):
            return TsRef("ArrayBuffer")
        # typing_extensions' check also knows its own TypedDicts, which pydantic requires
        # before Python 3.12; typing's does not.
        if typing_extensions.is_typeddict(cls):
            return self._guarded(cls, self._typeddict)
        if _is_pydantic_model(cls):
            if self.result:
                return self.note(
                    f"pydantic model {cls.__qualname__} (no Convex value: return "
                    "model_dump(by_alias=True))"
                )
            return self._guarded(cls, self._pydantic)
        if self.result and (cls in _SETS or issubclass(cls, set | frozenset)):
            return self.note(f"{cls.__name__} (no Convex value: return a list)")
        if cls in _SEQUENCES or issubclass(cls, list | tuple | set | frozenset):
            return TsArray(self.note(f"bare {cls.__name__}"))
        if cls in _MAPPINGS or issubclass(cls, dict):
            return TsRecord(self.note("bare dict"))
        return self.note(f"class {cls.__qualname__}")

    def _guarded(self, cls: type, build: Callable[[type], TsType]) -> TsType:
        if cls in self._stack:
            return self.note(f"recursive type {cls.__qualname__}")
        self._stack.append(cls)
        try:
            return build(cls)
        finally:
            self._stack.pop()

    def _typeddict(self, cls: type) -> TsType:
        hints = typing.get_type_hints(cls, include_extras=True)
        optional: frozenset[str] = getattr(cls, "__optional_keys__", frozenset())
        props = []
        for name, hint in hints.items():
            # Under `from __future__ import annotations` the class cannot see NotRequired /
            # Required when it is created, so the resolved hint decides.
            origin = typing.get_origin(hint)
            if origin is typing.NotRequired:
                is_optional = True
            elif origin is typing.Required:
                is_optional = False
            else:
                is_optional = name in optional
            props.append(TsProperty(name, self.map(hint), optional=is_optional))
        return TsObject(tuple(props))

    def _pydantic(self, cls: type) -> TsType:
        fields: dict[str, Any] = cls.model_fields  # type: ignore[attr-defined]
        props = []
        for name, info in fields.items():
            key = info.alias or name
            props.append(
                TsProperty(
                    key,
                    self.map(info.annotation),
                    optional=not info.is_required(),
                    doc=info.description,
                )
            )
        return TsObject(tuple(props))


def _name(origin: Any) -> str:
    return getattr(origin, "__name__", str(origin))


def _is_pydantic_model(cls: type) -> bool:
    try:
        from pydantic import BaseModel
    except ImportError:  # pragma: no cover - pydantic is a dependency
        return False
    return issubclass(cls, BaseModel)


def args_type(spec: FunctionSpec, mapper: TypeMapper) -> TsType:
    """The TypeScript type of a registered function's arguments object.

    An argument with a default is optional (``name?: T``); one whose hint allows None also
    accepts ``null``. A function without arguments takes ``Record<string, never>``, as in
    Convex's generated types, so ``useQuery(ref, {})`` and ``useQuery(ref)`` both check.
    """
    props = tuple(
        TsProperty(a.name, mapper.map(a.annotation), optional=not a.required) for a in spec.args
    )
    return TsObject(props) if props else TsRef("Record<string, never>")
