"""The ``marketpulse`` command.

Each package owns its commands in a private ``_cli`` module exposing
``register(app)``; this module only assembles them, so the command-line
contract (see docs/architecture.md) lives next to the code it drives.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="marketpulse",
    help="Real-time market data: exchange feed -> Temporal -> reactive store -> Convex clients.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Real-time market data: exchange feed -> Temporal -> reactive store -> Convex clients."""


_COMMAND_MODULES = (
    "marketpulse.reactive._cli",
    "marketpulse.simulator._cli",
    "marketpulse.kalshi._cli",
    "marketpulse.pipeline._cli",
    "marketpulse.marketdata._cli",
    "marketpulse.dashboard._cli",
    "marketpulse.bench_cli",
)


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A package that has not grown its commands yet; anything else is a real error.
            if exc.name != name:
                raise
            continue
        module.register(app)


_register_all()


def main() -> None:
    """Entry point of the ``marketpulse`` console script."""
    app()
