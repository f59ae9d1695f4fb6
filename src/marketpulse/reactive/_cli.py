"""``marketpulse serve``: the reactive store on one port (sync WebSocket, HTTP API, web assets).

The store is generic: which functions it runs and which web assets it serves when not told
otherwise are the assembling application's choice, passed to :func:`register`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import inspect
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, TypeVar

import structlog
import typer
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from marketpulse._admin_key import new_admin_key
from marketpulse._log_format import stdlib_handler
from marketpulse.reactive.limits import SERVE_LIMITS, ConnectionLimits, RunLimits

T = TypeVar("T")

__all__ = ["EXIT_DATABASE_REFUSED", "ServeSettings", "register"]

DEFAULT_DB = "sqlite:./data/marketpulse.sqlite"
EXIT_DATABASE_REFUSED = 3
"""``serve``'s exit code when it refuses its database (restarting it will not help)."""


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
    auth_config: str | None = None
    """Auth providers like Convex's ``auth.config``: a JSON/TOML file, or JSON text."""
    dev_auth_key: Path | None = None
    """Serve the development identity provider with its key in this file (made if missing);
    off when ``auth_config`` names real providers."""
    dev_auth_url: str | None = None
    """Where users reach this store (a balancer's URL, for several nodes sharing the dev key):
    the dev issuer is ``<it>/auth/dev``; default ``http://<host>:<port>``."""
    auth_jwks_min_refresh_s: float = Field(10.0, ge=0)
    """Least time between two JWKS fetches caused by unknown key ids."""
    accept_database_loss: bool = False
    """Start even on a database that is missing, empty, foreign, older than the marker beside
    it records, or corrupt (``--accept-database-loss``)."""
    relaxed_flush_ms: float = Field(10.0, ge=0, le=1000)
    """Relaxed-durability commits (``durability="relaxed"``) are written at most this many ms
    after they were answered (docs/store.md, "Durability")."""
    # Front-door limits (reactive/limits.py ConnectionLimits; 0 turns a count limit off).
    max_connections: int = Field(ConnectionLimits.max_connections, ge=0)
    max_connections_per_client: int = Field(ConnectionLimits.max_connections_per_client, ge=0)
    header_timeout_s: float = Field(ConnectionLimits.header_timeout_s, ge=0)
    body_timeout_s: float = Field(ConnectionLimits.body_timeout_s, ge=0)
    connect_timeout_s: float = Field(ConnectionLimits.connect_timeout_s, ge=0)
    message_timeout_s: float = Field(ConnectionLimits.message_timeout_s, ge=0)
    idle_timeout_s: float = Field(ConnectionLimits.idle_timeout_s, ge=0)
    max_fragments: int = Field(ConnectionLimits.max_fragments, ge=0)
    max_partial_bytes: int = Field(ConnectionLimits.max_partial_bytes, ge=0)
    max_header_bytes: int = Field(ConnectionLimits.max_header_bytes, ge=0)
    max_body_bytes: int = Field(ConnectionLimits.max_body_bytes, ge=0)
    max_json_depth: int = Field(ConnectionLimits.max_json_depth, ge=1, le=512)
    max_batch_queries: int = Field(ConnectionLimits.max_batch_queries, ge=0)
    max_queries: int = Field(ConnectionLimits.max_queries, ge=0)
    max_query_changes: int = Field(ConnectionLimits.max_query_changes, ge=0)
    max_query_set_bytes: int = Field(ConnectionLimits.max_query_set_bytes, ge=0)
    max_unsent_bytes: int = Field(ConnectionLimits.max_unsent_bytes, ge=0)
    max_pending_mutations: int = Field(ConnectionLimits.max_pending_mutations, ge=1)
    max_mutations_in_flight: int = Field(ConnectionLimits.max_mutations_in_flight, ge=1)
    max_concurrent_actions: int = Field(ConnectionLimits.max_concurrent_actions, ge=1)
    work_slice_s: float = Field(ConnectionLimits.work_slice_s, gt=0)
    client_query_share: float = Field(ConnectionLimits.client_query_share, ge=0)
    # Who may read the store from a browser, and who may read its metrics.
    cors_origins: list[str] = Field(default_factory=list)
    """Allowed browser origins besides the store's own (``*``: any); unset: localhost only."""
    cors_credentials: bool = False
    metrics_token: SecretStr | None = None
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Serve /metrics on this port instead of the main one (at ``metrics_host``)."""
    metrics_host: str = "127.0.0.1"
    webhook_allow: str | None = None
    """Hosts the served functions' webhooks may reach, comma-separated (addresses, networks,
    names, ``*.domain``); handed to the functions as ``MARKETPULSE_WEBHOOK_ALLOW``. Unset: the
    functions' own default (the market data app allows loopback only)."""
    sqlite_inline_max_writes: int = Field(0, ge=0)
    """SQLite: commits of at most this many writes are fsynced on the event loop's thread when
    the writer is idle (saves ~0.16 ms; a stalling disk then stalls every client). 0: never."""
    test_slow_disk_s: float = Field(0.0, ge=0)
    """Tests and benchmarks only: the SQLite writer sleeps this long on one flush every
    ``test_slow_disk_every_s`` (a stalling disk; ``persistence/_slow_disk.py``). 0: off."""
    test_slow_disk_every_s: float = Field(2.0, gt=0)

    def connection_limits(self) -> ConnectionLimits:
        """The :class:`ConnectionLimits` these settings ask for."""
        chosen = {name: getattr(self, name) for name in SERVE_LIMITS}
        return ConnectionLimits(
            max_message_bytes=self.max_message_bytes,
            client_send_timeout_s=self.client_send_timeout_s,
            **chosen,
        )


_LIMIT_HELP = {
    "max_connections": "Open connections in total (0: only the fd limit).",
    "max_connections_per_client": "Open connections per client address (0: no cap).",
    "header_timeout_s": "Seconds to send a complete request head (and WebSocket handshake).",
    "body_timeout_s": "Seconds to send a request body.",
    "connect_timeout_s": "Seconds from WebSocket upgrade to the Connect message.",
    "message_timeout_s": "Seconds a WebSocket message may stay unfinished.",
    "idle_timeout_s": "Close a sync socket with no query and no message for this long, s.",
    "max_fragments": "Frames one WebSocket message may be split into.",
    "max_partial_bytes": "Bytes of unfinished WebSocket messages held server-wide.",
    "max_unsent_bytes": "Bytes written and not yet taken by clients, server-wide.",
    "max_header_bytes": "Largest HTTP request head, bytes.",
    "max_body_bytes": "Largest HTTP request body, bytes.",
    "max_json_depth": "Deepest nesting of a client's JSON arguments.",
    "max_batch_queries": "Queries in one /api/query_batch.",
    "max_queries": "Queries in one sync socket's query set.",
    "max_query_changes": "Modifications in one ModifyQuerySet.",
    "max_query_set_bytes": "Bytes of arguments of one sync socket's queries together.",
    "max_pending_mutations": "Mutations queued on one socket.",
    "max_mutations_in_flight": "Mutations of one socket run ahead of their responses.",
    "max_concurrent_actions": "Actions running for one socket.",
    "work_slice_s": "Seconds of first query runs one socket gets per loop turn.",
    "client_query_share": "Query run seconds per second one client address may use.",
}


def _limit_flag(name: str) -> str:
    return "--" + name.removesuffix("_s").replace("_", "-")


def _with_limit_flags(func: Callable[..., None]) -> Callable[..., None]:
    """Give ``func`` one optional flag per :data:`SERVE_LIMITS` field (typed as in
    :class:`ConnectionLimits`), passed to it in ``limits``: the flags are declared once."""
    types = {f.name: f.type for f in dataclasses.fields(ConnectionLimits)}
    signature = inspect.signature(func)
    params = [p for p in signature.parameters.values() if p.name != "limits"]
    for name in SERVE_LIMITS:
        kind: Any = float if types[name] in (float, "float") else int
        annotation = Annotated[kind | None, typer.Option(_limit_flag(name), help=_LIMIT_HELP[name])]
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
            )
        )

    def wrapper(**options: Any) -> None:
        limits = {name: options.pop(name) for name in SERVE_LIMITS}
        func(limits=limits, **options)

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    wrapper.__doc__ = func.__doc__
    wrapper.__name__ = func.__name__
    return wrapper


def configure_logging(level: str) -> None:
    """structlog to stderr: key=value on a terminal, JSON lines otherwise."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    stamp: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # The standard library's records (the engine's, uvicorn's, asyncio's) in the same format
    # as structlog's: one JSON object a line, a traceback as its "exception" field.
    logging.basicConfig(level=numeric, handlers=[stdlib_handler(renderer, stamp)])
    # uvicorn logs every WebSocket accept at INFO, and websockets every "connection open" and
    # "connection closed" (our sync socket's logger): noise at a thousand subscribers, and at
    # 100,000 the log line was ~6 % of a node's handshake time.
    logging.getLogger("uvicorn.error").setLevel(max(numeric, logging.WARNING))
    logging.getLogger("marketpulse.sync.websocket").setLevel(max(numeric, logging.WARNING))
    # httpx logs every request's full URL at INFO: a user's alert webhook is often its own
    # credential (a Slack or Discord hook), and must stay with its user (JWKS fetches log
    # their own line).
    logging.getLogger("httpx").setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *stamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def top_level(module: ModuleType, kind: type[T]) -> list[T]:
    """The objects of type ``kind`` bound at the top level of ``module``."""
    return [v for v in vars(module).values() if isinstance(v, kind)]


def function_modules_of(name: str, module: ModuleType) -> list[Any]:
    """The FunctionModule objects at the top level of ``module`` (imported as ``name``).

    Raises:
        typer.BadParameter: it defines none.
    """
    from marketpulse.reactive import FunctionModule

    found = top_level(module, FunctionModule)
    if not found:
        raise typer.BadParameter(f"{name!r} defines no FunctionModule at its top level")
    return found


def import_functions_module(name: str) -> ModuleType:
    """Import the functions module ``name``, also from the current directory.

    ``python -m marketpulse`` searches the current directory first, the ``marketpulse``
    console script not at all: ``marketpulse serve --functions my_app.functions`` run in the
    app's folder could not find ``my_app``. The current directory is searched after everything
    already on ``sys.path``, so a file there never shadows an installed package.
    """
    here = os.getcwd()
    if not any(os.path.abspath(entry or os.curdir) == here for entry in sys.path):
        sys.path.append(here)
    return importlib.import_module(name)


def load_function_modules(names: list[str], *, may_be_missing: str | None = None) -> list[Any]:
    """Import each module and collect the FunctionModule objects at its top level.

    Args:
        names: Module names to import.
        may_be_missing: A module (the unrequested default) whose absence is only a warning.
    """
    log = structlog.get_logger("marketpulse.serve")
    found: list[Any] = []
    for name in names:
        try:
            module = import_functions_module(name)
        except ModuleNotFoundError as exc:
            if name == may_be_missing and exc.name in {name, name.rpartition(".")[0]}:
                log.warning("default functions module not found; serving no functions", module=name)
                continue
            raise typer.BadParameter(f"cannot import functions module {name!r}: {exc}") from None
        found.extend(function_modules_of(name, module))
    return found


def load_crons(names: list[str]) -> list[Any]:
    """The :class:`~marketpulse.reactive.crons.Crons` objects at the top level of the (already
    loaded) functions modules ``names``."""
    from marketpulse.reactive.crons import Crons

    found: list[Any] = []
    for name in names:
        module = sys.modules.get(name)
        if module is not None:
            found.extend(top_level(module, Crons))
    return found


def start_metrics_server(port: int, host: str, registry: Any, *, token: str | None) -> Any:
    """Serve ``registry`` at ``host:port`` on a thread (prometheus_client's server), answering
    only ``Authorization: Bearer <token>`` when ``token`` is set, as ``/metrics`` on the main
    port does (``MARKETPULSE_METRICS_TOKEN``). Returns the server (``shutdown()`` stops it).

    Raises:
        OSError: the address cannot be bound.
    """
    import hmac
    import socket
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    metrics = make_wsgi_app(registry)
    expected = f"Bearer {token}".encode() if token else None

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
        if expected is not None and not hmac.compare_digest(given, expected):
            headers = [("Content-Type", "application/json"), ("WWW-Authenticate", "Bearer")]
            start_response("401 Unauthorized", headers)
            return [b'{"code":"Unauthenticated","message":"metrics need a token"}']
        return metrics(environ, start_response)

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingWSGIServer):
        address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    server = make_server(host, port, app, Server, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


class CannotListen(RuntimeError):
    """``serve`` could not bind its port (uvicorn has logged the cause)."""


def _graceful_server_class() -> Any:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn, minus re-raising SIGTERM/SIGINT after shutdown (which would kill the
        process before the engine and SQLite are closed); exits 0 instead."""

        on_listening: Callable[[int], None] | None = None

        async def startup(self, sockets: Any = None) -> None:
            from marketpulse.reactive.admission import widen_listen_queue

            try:
                await super().startup(sockets)
            except SystemExit:
                # uvicorn logs why (a port in use) and exits 3, which is EXIT_DATABASE_REFUSED
                # here: say it apart.
                raise CannotListen(
                    f"cannot listen on {self.config.host}:{self.config.port}"
                ) from None
            widen_listen_queue(self.servers)  # listened with ACCEPT_BATCH: see there
            if self.on_listening is not None:
                # The bound port, which is not --port when that is 0.
                self.on_listening(self.servers[0].sockets[0].getsockname()[1])

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
    auth: tuple[Any, Any] = (None, None),
) -> None:
    from marketpulse.reactive._binding import open_gateway
    from marketpulse.reactive._cron_runner import CronRunner
    from marketpulse.reactive._gc import GcPacer
    from marketpulse.reactive._loop_watch import LoopWatch
    from marketpulse.reactive.admission import quiet_accept_errors, raise_fd_limit
    from marketpulse.reactive.persistence import NodeLiveness, shown_url
    from marketpulse.reactive.server import build_app, uvicorn_config

    log = structlog.get_logger("marketpulse.serve")
    _GracefulServer = _graceful_server_class()
    quiet_accept_errors(asyncio.get_running_loop())
    verifier, dev_issuer = auth
    gateway, close = await open_gateway(settings, admin_key, modules, verifier)
    runner: CronRunner | None = None
    try:
        # The gateway sees the engine through a narrow protocol; open_gateway opened an Engine.
        engine: Any = gateway.engine
        persistence = engine.persistence
        runner = CronRunner(
            engine,
            load_crons(settings.functions),
            liveness=persistence if isinstance(persistence, NodeLiveness) else None,
        )
        # Before the port opens: a client never sees what an at-start job resets.
        await runner.run_startup()
        runner.start()
        fd_limit = raise_fd_limit()
        wanted = gateway.admission.max_total
        cap = gateway.admission.cap_total(fd_limit)
        if wanted <= 0 or cap < wanted:
            log.warning(
                "connection cap lowered to fit the file-descriptor limit",
                fd_limit=fd_limit,
                max_connections=cap,
                hint="raise the hard limit (ulimit -Hn, LimitNOFILE=) to allow more",
            )
        token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
        app = build_app(
            gateway,
            static_dir=static,
            metrics=settings.metrics_port is None,
            metrics_token=token or None,
            extra_routes=dev_issuer.routes() if dev_issuer is not None else (),
        )
        if settings.metrics_port is not None:
            try:
                start_metrics_server(
                    settings.metrics_port,
                    settings.metrics_host,
                    gateway.metrics.registry,
                    token=token or None,
                )
            except OSError as exc:
                where = f"{settings.metrics_host}:{settings.metrics_port}"
                raise CannotListen(f"cannot serve metrics on {where}: {exc.strerror}") from None
        from marketpulse.reactive.admission import ACCEPT_BATCH

        config = uvicorn_config(
            app,
            settings.host,
            settings.port,
            gateway,
            timeout_graceful_shutdown=5,
            backlog=ACCEPT_BATCH,
        )
        server = _GracefulServer(config)
        # Everything alive now (modules, app, loaded store) lives as long as the process: keep
        # it out of the collector's full passes, which otherwise scan it on every one (a full
        # collection with 1,000 sockets stalled every push 140-160 ms), and bound every later
        # pass by count, not by the heap (see GcPacer).
        freezer = GcPacer(asyncio.get_running_loop())
        freezer.start()
        watch = LoopWatch(gateway.metrics.registry)
        watch.start()
        server.on_listening = lambda port: log.info(
            "store listening",
            url=f"http://{settings.host}:{port}",
            db=shown_url(settings.db),
            modules=[m.name for m in modules],
            static=str(static) if static else None,
            auth=[p.issuer for p in verifier.providers] if verifier else [],
            dev_sign_in=f"{dev_issuer.issuer}/sign-in" if dev_issuer else None,
            crons=[job.name for job in runner.jobs],
            loop=type(asyncio.get_running_loop()).__module__,
        )
        try:
            await server.serve()
        finally:
            freezer.stop()
            await watch.stop()
            gateway.fanout.close()
    finally:
        if runner is not None:
            await runner.stop()
        await close()
        log.info("store stopped")


def event_loop_factory(
    *, profiling: bool = False
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``serve`` runs on: uvloop's with ``MARKETPULSE_UVLOOP=1``, else asyncio's
    (``None``).

    Opt-in: on this project's 2-core benchmark host uvloop was not measured faster at 10,000
    msg/s (CHANGELOG, issue 15), so it is not a dependency. Profiling keeps asyncio's loop,
    whose callback handles it times (``_profiling``).

    Raises:
        RuntimeError: uvloop was asked for and is not installed.
    """
    flag = os.environ.get("MARKETPULSE_UVLOOP", "").strip().lower()
    if profiling or flag in _OFF:
        return None
    if flag not in _ON:
        raise RuntimeError(f"MARKETPULSE_UVLOOP must be 1 or 0, not {flag!r}")
    try:
        import uvloop
    except ImportError:
        raise RuntimeError("MARKETPULSE_UVLOOP=1 needs uvloop: pip install uvloop") from None
    return uvloop.new_event_loop


_OFF = frozenset({"", "0", "false", "no", "off"})
_ON = frozenset({"1", "true", "yes", "on"})


def _auth(settings: ServeSettings) -> tuple[Any, Any]:
    from marketpulse.reactive._binding import auth_for
    from marketpulse.reactive.auth import AuthConfigError

    try:
        verifier, dev_issuer = auth_for(settings)
    except (AuthConfigError, ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--auth-config / --dev-auth-key") from None
    if settings.dev_auth_key is not None and dev_issuer is None:
        structlog.get_logger("marketpulse.serve").warning(
            "an auth provider is configured: the dev sign-in is off"
        )
    return verifier, dev_issuer


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
    @_with_limit_flags
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
        auth_config: Annotated[
            str | None,
            typer.Option(help="Auth providers (Convex auth.config as a JSON or TOML file)."),
        ] = None,
        dev_auth_key: Annotated[
            Path | None,
            typer.Option(help="Serve the dev sign-in at /auth/dev, its key in this file."),
        ] = None,
        dev_auth_url: Annotated[
            str | None,
            typer.Option(help="Where users reach the store (a balancer): the dev issuer's base."),
        ] = None,
        accept_database_loss: Annotated[
            bool,
            typer.Option(
                "--accept-database-loss",
                help="Start even on a missing, empty, foreign, older or corrupt database.",
            ),
        ] = False,
        relaxed_flush_ms: Annotated[
            float | None,
            typer.Option(help="Write relaxed-durability commits at most this many ms late."),
        ] = None,
        cors_origin: Annotated[
            list[str] | None,
            typer.Option("--cors-origin", help="A browser origin allowed besides localhost."),
        ] = None,
        cors_credentials: Annotated[
            bool | None, typer.Option(help="Allow credentials in CORS answers.")
        ] = None,
        metrics_port: Annotated[
            int | None, typer.Option(help="Serve /metrics on this port only.")
        ] = None,
        metrics_host: Annotated[
            str | None, typer.Option(help="Interface for --metrics-port.")
        ] = None,
        webhook_allow: Annotated[
            str | None,
            typer.Option(help="Hosts user webhooks may reach: 10.0.0.0/8,hooks.example.com,..."),
        ] = None,
        *,
        limits: dict[str, Any],
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
            "auth_config": auth_config,
            "dev_auth_key": dev_auth_key,
            "dev_auth_url": dev_auth_url,
            "accept_database_loss": accept_database_loss or None,
            "relaxed_flush_ms": relaxed_flush_ms,
            "cors_origins": cors_origin,
            "cors_credentials": cors_credentials,
            "metrics_port": metrics_port,
            "metrics_host": metrics_host,
            "webhook_allow": webhook_allow,
            **limits,
        }
        settings = ServeSettings(**{k: v for k, v in overrides.items() if v is not None})
        if "functions" not in settings.model_fields_set and default_functions is not None:
            settings = settings.model_copy(update={"functions": [default_functions]})
        configure_logging(settings.log_level)
        from marketpulse.reactive.persistence import database_kind

        try:
            database_kind(settings.db)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--db / MARKETPULSE_DB") from None
        if settings.admin_key is not None and settings.admin_key.get_secret_value():
            admin_key = settings.admin_key.get_secret_value()
        else:
            admin_key = new_admin_key()
            # Printed once, to the console only: never logged, never stored.
            typer.echo(f"Admin key (set MARKETPULSE_ADMIN_KEY to choose your own): {admin_key}")
        if settings.webhook_allow is not None:
            # The functions read it from the environment, like the rest of their settings.
            os.environ["MARKETPULSE_WEBHOOK_ALLOW"] = settings.webhook_allow
        modules = load_function_modules(
            settings.functions, may_be_missing=default_functions if functions is None else None
        )
        static = settings.static_dir or default_static_dir
        auth = _auth(settings)
        from marketpulse.reactive._profiling import profiled
        from marketpulse.reactive.persistence import PersistenceError, UnsafeDatabase
        from marketpulse.reactive.sync._fanout_writer import fanout_writer_from_env

        profile = os.environ.get("MARKETPULSE_PROFILE")
        try:
            loop_factory = event_loop_factory(profiling=bool(profile))
            # Read once here too, so a bad MARKETPULSE_FANOUT_* value is refused like a bad
            # MARKETPULSE_UVLOOP (one line, exit 2), not as a traceback from inside the loop.
            fanout_writer_from_env()
        except (RuntimeError, ValueError) as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
        try:
            with (
                contextlib.suppress(KeyboardInterrupt),
                profiled(profile),
                asyncio.Runner(loop_factory=loop_factory) as run,
            ):
                run.run(_serve(settings, admin_key, modules, static, auth))
        except UnsafeDatabase as exc:
            # A refusal is not a crash: one paragraph, no traceback, and its own exit code so
            # a supervisor knows restarting will not help.
            typer.echo(str(exc), err=True)
            raise typer.Exit(EXIT_DATABASE_REFUSED) from None
        except (PersistenceError, CannotListen) as exc:
            # The database cannot be reached, or the port is taken: one line, exit 1 (a
            # supervisor may retry), rather than a traceback around the one line that matters.
            typer.echo(f"marketpulse serve: {exc}", err=True)
            raise typer.Exit(1) from None
