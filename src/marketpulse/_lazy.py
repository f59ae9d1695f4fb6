"""Lazy package exports (PEP 562), as websockets' ``imports.lazy_import`` provides them.

A package ``__init__`` lists where each exported name lives; the module behind a name is
imported on the name's first access, so importing one light submodule (the sync wire client,
say) does not load the package's heavy siblings (the engine, SQLite). Type checkers read the
same names from an ``if TYPE_CHECKING:`` block of real imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

__all__ = ["lazy_import"]


def lazy_import(namespace: dict[str, Any], aliases: Mapping[str, str]) -> None:
    """Give a package module-level ``__getattr__`` and ``__dir__`` serving ``aliases`` lazily.

    Typical use, at the end of a package's ``__init__.py``::

        if TYPE_CHECKING:
            from .engine import QueryCtx
        else:
            lazy_import(globals(), {"QueryCtx": ".engine"})

    Args:
        namespace: The package's ``globals()``.
        aliases: Exported name -> the module that defines it (relative to the package, or
            absolute). A name is imported on first access and then kept in ``namespace``.

    Raises:
        ValueError: a name in ``aliases`` is already defined in ``namespace``.
    """
    package: str = namespace["__name__"]
    clash = sorted(namespace.keys() & aliases.keys())
    if clash:
        raise ValueError(f"{package} defines {clash} and also imports them lazily")

    def __getattr__(name: str) -> Any:
        try:
            source = aliases[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(source, package), name)
        namespace[name] = value  # later lookups find it without coming here
        return value

    def __dir__() -> list[str]:
        return sorted(namespace.keys() | aliases.keys())

    namespace["__getattr__"] = __getattr__
    namespace["__dir__"] = __dir__
