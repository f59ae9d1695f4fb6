"""The ``marketpulse`` command.

Each package owns its commands in a private ``_cli`` module exposing
``register(app, ...)``; this module only assembles them, so the command-line
contract (docs/architecture.md) lives next to the code it drives. It is also where the
application is chosen: the generic store's ``serve`` (and ``codegen``) are told here which
functions module and web assets are marketpulse's.
"""

from __future__ import annotations

import importlib
from typing import Any

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


APP_FUNCTIONS = "marketpulse.marketdata.functions"
"""The functions module ``serve`` and ``codegen`` use when none is named: the market data app."""


_COMMAND_MODULES = (
    "marketpulse.reactive._cli",
    "marketpulse.simulator._cli",
    "marketpulse.kalshi._cli",
    "marketpulse.pipeline._cli",
    "marketpulse.dashboard._cli",
    "marketpulse.bench_cli",
)


def _app_options(module: str) -> dict[str, Any]:
    """What this application passes to ``module``'s ``register`` besides the command."""
    if module == "marketpulse.reactive._cli":
        from marketpulse.dashboard import static_dir

        return {
            "default_functions": APP_FUNCTIONS,
            "static_dir": static_dir(),
            "help_text": "Run the reactive store: Convex sync WebSocket, HTTP API and the dashboard.",
        }
    if module == "marketpulse.dashboard._cli":
        return {"default_functions": APP_FUNCTIONS}
    return {}


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(app, **_app_options(name))


_register_all()


def main() -> None:
    """Entry point of the ``marketpulse`` console script."""
    app()
