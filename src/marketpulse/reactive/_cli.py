"""``marketpulse serve``: the reactive store on one port (sync WebSocket, HTTP API, web assets).

The store is generic: which functions it runs and which web assets it serves when not told
otherwise are the assembling application's choice, passed to :func:`register`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, cast

import structlog
import typer
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from marketpulse._admin_key import new_admin_key
from marketpulse.reactive.limits import ConnectionLimits, RunLimits

__all__ = ["ServeSettings", "register"]

DEFAULT_DB = "sqlite:./data/marketpulse.sqlite"


class ServeSettings(BaseSettings):
    """Settings of ``marketpulse serve``; every field also reads ``MARKETPULSE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MARKETPULSE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(3210, ge=0, le=65535)
    db: str = DEFAULT_DB
    functions: list[str] = Field(default_factory=list)
    """Modules to load; when unset, ``serve`` loads the default module it was registered with."""
    admin_key: SecretStr | None = None
    max_message_bytes: int = Field(ConnectionLimits.max_message_bytes, ge=1024)
    query_timeout_s: float = Field(RunLimits.query_time_limit, gt=0)
    max_result_bytes: int = Field(RunLimits.max_result_bytes, ge=1024)
    client_send_timeout_s: float = Field(ConnectionLimits.client_send_timeout_s, gt=0)
    static_dir: Path | None = None
    log_level: str = "info"


def configure_logging(level: str) -> None:
    """structlog to stderr: key=value on a terminal, JSON lines otherwise."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(message)s")
    # uvicorn logs every WebSocket accept at INFO: noise at a thousand subscribers.
    logging.getLogger("uvicorn.error").setLevel(max(numeric, logging.WARNING))
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def load_function_modules(names: list[str], *, may_be_missing: str | None = None) -> list[Any]:
    """Import each module and collect the FunctionModule objects at its top level.

    Args:
        names: Module names to import.
        may_be_missing: A module (the unrequested default) whose absence is only a warning.
    """
    from marketpulse.reactive import FunctionModule

    log = structlog.get_logger("marketpulse.serve")
    found: list[Any] = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if name == may_be_missing and exc.name in {name, name.rpartition(".")[0]}:
                log.warning("default functions module not found; serving no functions", module=name)
                continue
            raise typer.BadParameter(f"cannot import functions module {name!r}: {exc}") from None
        mods = [v for v in vars(module).values() if isinstance(v, FunctionModule)]
        if not mods:
            raise typer.BadParameter(f"{name!r} defines no FunctionModule at its top level")
        found.extend(mods)
    return found


def load_crons(names: list[str]) -> list[Any]:
    """The :class:`~marketpulse.reactive.crons.Crons` objects at the top level of the (already
    loaded) functions modules ``names``."""
    from marketpulse.reactive.crons import Crons

    found: list[Any] = []
    for name in names:
        module = sys.modules.get(name)
        if module is not None:
            found.extend(v for v in vars(module).values() if isinstance(v, Crons))
    return found


def _graceful_server_class() -> Any:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn, minus re-raising SIGTERM/SIGINT after shutdown (which would kill the
        process before the engine and SQLite are closed); exits 0 instead."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.handle_exit, sig, None)
            try:
                yield
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    return GracefulServer


async def _serve(
    settings: ServeSettings,
    admin_key: str,
    modules: list[Any],
    static: Path | None,
) -> None:
    from marketpulse.reactive._binding import open_gateway
    from marketpulse.reactive._cron_runner import CronRunner
    from marketpulse.reactive._gc import SurvivorFreezer
    from marketpulse.reactive.server import build_app, uvicorn_config

    log = structlog.get_logger("marketpulse.serve")
    _GracefulServer = _graceful_server_class()
    gateway, close = await open_gateway(settings, admin_key, modules)
    runner: CronRunner | None = None
    try:
        # The gateway sees the engine through a narrow protocol; open_gateway opened an Engine.
        runner = CronRunner(cast(Any, gateway.engine), load_crons(settings.functions))
        # Before the port opens: a client never sees what an at-start job resets.
        await runner.run_startup()
        runner.start()
        app = build_app(gateway, static_dir=static)
        config = uvicorn_config(
            app, settings.host, settings.port, gateway, timeout_graceful_shutdown=5
        )
        server = _GracefulServer(config)
        # Everything alive now (modules, app, loaded store) lives as long as the process: keep
        # it out of the collector's full passes, which otherwise scan it on every one (a full
        # collection with 1,000 sockets stalled every push 140-160 ms; 40-70 ms with this), and
        # freeze the survivors of each later full pass too (see SurvivorFreezer).
        freezer = SurvivorFreezer(asyncio.get_running_loop())
        freezer.start()
        log.info(
            "store listening",
            url=f"http://{settings.host}:{settings.port}",
            db=settings.db.split("@")[-1],
            modules=[m.name for m in modules],
            static=str(static) if static else None,
            crons=[job.name for job in runner.jobs],
        )
        try:
            await server.serve()
        finally:
            freezer.stop()
    finally:
        if runner is not None:
            await runner.stop()
        await close()
        log.info("store stopped")


def register(
    app: typer.Typer,
    *,
    default_functions: str | None = None,
    static_dir: Path | None = None,
    help_text: str | None = None,
) -> None:
    """Add ``serve`` to the ``marketpulse`` command.

    Args:
        app: The command to add ``serve`` to.
        default_functions: Functions module loaded when neither ``--functions`` nor
            ``MARKETPULSE_FUNCTIONS`` names any; None serves no functions then.
        static_dir: Web assets served at ``/`` when ``--static-dir`` is not given.
        help_text: The command's help, naming what this application serves (default: generic).
    """
    default_static_dir = static_dir

    @app.command(help=help_text)
    def serve(
        host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
        port: Annotated[int | None, typer.Option(help="Port (default 3210).")] = None,
        db: Annotated[
            str | None, typer.Option(help="sqlite:PATH (default) or postgresql://...")
        ] = None,
        functions: Annotated[
            list[str] | None,
            typer.Option("--functions", help="Python module(s) declaring FunctionModules."),
        ] = None,
        max_message_bytes: Annotated[
            int | None, typer.Option(help="Largest client message.")
        ] = None,
        query_timeout: Annotated[
            float | None, typer.Option(help="Query run-time limit, s.")
        ] = None,
        max_result_bytes: Annotated[int | None, typer.Option(help="Largest query result.")] = None,
        client_send_timeout: Annotated[
            float | None, typer.Option(help="Drop a client that reads nothing for this long, s.")
        ] = None,
        static_dir: Annotated[Path | None, typer.Option(help="Web assets to serve at /.")] = None,
    ) -> None:
        """Run the reactive store: Convex sync WebSocket, HTTP API and web assets."""
        overrides: dict[str, Any] = {
            "host": host,
            "port": port,
            "db": db,
            "functions": functions,
            "max_message_bytes": max_message_bytes,
            "query_timeout_s": query_timeout,
            "max_result_bytes": max_result_bytes,
            "client_send_timeout_s": client_send_timeout,
            "static_dir": static_dir,
        }
        settings = ServeSettings(**{k: v for k, v in overrides.items() if v is not None})
        if "functions" not in settings.model_fields_set and default_functions is not None:
            settings = settings.model_copy(update={"functions": [default_functions]})
        configure_logging(settings.log_level)
        if settings.admin_key is not None and settings.admin_key.get_secret_value():
            admin_key = settings.admin_key.get_secret_value()
        else:
            admin_key = new_admin_key()
            # Printed once, to the console only: never logged, never stored.
            typer.echo(f"Admin key (set MARKETPULSE_ADMIN_KEY to choose your own): {admin_key}")
        modules = load_function_modules(
            settings.functions, may_be_missing=default_functions if functions is None else None
        )
        static = settings.static_dir or default_static_dir
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(settings, admin_key, modules, static))
