"""``marketpulse codegen``: TypeScript declarations of the store's functions for web/."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

__all__ = ["find_result_schemas", "load_modules", "register", "write_api"]

DEFAULT_OUT = Path("web/src/_generated")


def load_modules(names: list[str]) -> tuple[list[Any], dict[str, Any]]:
    """Import each module; collect its top-level FunctionModules and published result schemas.

    Result schemas are a ``RESULT_SCHEMAS`` mapping (function path -> JSON Schema) found on the
    module or, failing that, on the package that holds it.

    Raises:
        typer.BadParameter: a module cannot be imported or defines no FunctionModule.
    """
    from marketpulse.reactive._cli import function_modules_of, import_functions_module

    modules: list[Any] = []
    schemas: dict[str, Any] = {}
    for name in names:
        try:
            module = import_functions_module(name)
        except ImportError as exc:
            raise typer.BadParameter(f"cannot import functions module {name!r}: {exc}") from None
        modules.extend(function_modules_of(name, module))
        schemas.update(find_result_schemas(module))
    return modules, schemas


def find_result_schemas(module: ModuleType) -> Mapping[str, Any]:
    """``RESULT_SCHEMAS`` of ``module``, else of its enclosing packages; empty if none."""
    name = module.__name__
    while name:
        mod = sys.modules.get(name) or importlib.import_module(name)
        found = getattr(mod, "RESULT_SCHEMAS", None)
        if isinstance(found, Mapping):
            return found
        name = name.rpartition(".")[0]
    return {}


def write_api(functions: list[str], out: Path, check: bool) -> None:
    """Write (or, with ``check``, compare) the declarations of ``functions`` under ``out``.

    Raises:
        typer.Exit: with ``check``, exit code 1 when a file is out of date.
    """
    from marketpulse.reactive.codegen import generate

    modules, schemas = load_modules(functions)
    result = generate(modules, schemas)
    stale = [
        fname
        for fname, text in result.files.items()
        if not (out / fname).is_file() or (out / fname).read_text(encoding="utf-8") != text
    ]
    if check:
        if stale:
            typer.echo(f"out of date in {out}: {', '.join(stale)} (run `marketpulse codegen`)")
            raise typer.Exit(1)
        typer.echo(f"{out}: up to date ({len(result.functions)} functions)")
        return
    out.mkdir(parents=True, exist_ok=True)
    for fname, text in result.files.items():
        (out / fname).write_text(text, encoding="utf-8")
    for f in result.functions:
        typer.echo(f"  {f.visibility:<8} {f.kind:<8} {f.path}  (result from {f.result_from})")
    for path, what in result.loose.items():
        typer.echo(f"  note: {path} has loosely typed parts (any): {'; '.join(what)}", err=True)
    typer.echo(f"wrote {', '.join(sorted(result.files))} to {out}")


def register(app: typer.Typer, *, default_functions: str | None = None) -> None:
    """Add ``codegen`` to the ``marketpulse`` command.

    Args:
        app: The command to add ``codegen`` to.
        default_functions: Functions module described when ``--functions`` is not given.
    """

    @app.command("codegen")
    def codegen(
        functions: Annotated[
            list[str] | None,
            typer.Option("--functions", help="Functions module to describe (repeatable)."),
        ] = None,
        out: Annotated[
            Path, typer.Option("--out", help="Directory for api.d.ts and api.js.")
        ] = DEFAULT_OUT,
        check: Annotated[
            bool,
            typer.Option("--check", help="Write nothing; exit 1 if the files are not up to date."),
        ] = False,
    ) -> None:
        """Write TypeScript declarations (api.d.ts, api.js) of every function for convex/react."""
        names = functions or ([default_functions] if default_functions else [])
        if not names:
            raise typer.BadParameter("name a functions module with --functions")
        write_api(names, out, check)
