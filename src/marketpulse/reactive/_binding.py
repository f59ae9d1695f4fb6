"""Binds the engine (docs/interfaces.md §2) to the front doors: identities, kinds, limits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog

from marketpulse.reactive.access import Access, Caller
from marketpulse.reactive.engine import Engine, Identity, SchedulerRunner
from marketpulse.reactive.functions import FunctionModule, canonical_path
from marketpulse.reactive.gateway import Gateway, OriginPolicy
from marketpulse.reactive.limits import ConnectionLimits, RunLimits
from marketpulse.reactive.persistence import open_persistence

if TYPE_CHECKING:
    from marketpulse.reactive._cli import ServeSettings
    from marketpulse.reactive.auth import DevIssuer, TokenVerifier

__all__ = ["auth_for", "gateway_for", "identity_of", "open_gateway"]


def identity_of(caller: Caller) -> Identity:
    """The engine identity of an authenticated caller."""
    if caller.kind == "user" and caller.acting_as is not None:
        return Identity.for_user(caller.acting_as)
    if caller.kind == "admin":
        if not caller.acting_as:
            return Identity.admin()
        # Admin "acting as" a user runs as that user, as Convex's admin impersonation does.
        from marketpulse.reactive.auth._identity import acting_as_identity

        return Identity.for_user(acting_as_identity(caller.acting_as))
    return Identity.anonymous()


def gateway_for(
    engine: Engine,
    admin_key: str | None,
    limits: ConnectionLimits | None = None,
    verifier: TokenVerifier | None = None,
    origins: OriginPolicy | None = None,
) -> Gateway:
    """A gateway serving ``engine``; ``admin_key`` None means no caller is admin, ``verifier``
    None refuses user tokens."""

    def function_kind(path: str) -> str | None:
        try:
            spec = engine.functions.get(canonical_path(path))
        except ValueError:
            return None
        return spec.kind if spec is not None else None

    return Gateway(
        engine=engine,
        auth=Access(admin_key, verifier),
        identity_of=identity_of,
        function_kind=function_kind,
        limits=limits or ConnectionLimits(),
        origins=origins or OriginPolicy(),
    )


def auth_for(settings: ServeSettings) -> tuple[TokenVerifier | None, DevIssuer | None]:
    """The token verifier of ``settings`` (None: no providers) and the dev issuer it serves
    (None unless ``dev_auth_key`` is set and no real provider is configured).

    Raises:
        marketpulse.reactive.auth.AuthConfigError: the auth config is malformed.
    """
    if settings.auth_config is None and settings.dev_auth_key is None:
        return None, None
    from marketpulse.reactive.auth import AuthConfig, DevIssuer, TokenVerifier, load_auth_config

    config = load_auth_config(settings.auth_config) if settings.auth_config else AuthConfig()
    dev = None
    if settings.dev_auth_key is not None and not config:
        dev = DevIssuer.from_key_file(
            settings.dev_auth_key, settings.host, settings.port, base_url=settings.dev_auth_url
        )
        config = AuthConfig((dev.provider(),))
    verifier = TokenVerifier(config, min_refresh_s=settings.auth_jwks_min_refresh_s)
    return (verifier if config else None), dev


async def open_gateway(
    settings: ServeSettings,
    admin_key: str,
    modules: list[FunctionModule],
    verifier: TokenVerifier | None = None,
) -> tuple[Gateway, Callable[[], Awaitable[Any]]]:
    """Open persistence and engine per ``settings`` and start the scheduled-function runner;
    returns the gateway and its closer (runner, then engine, then the token verifier)."""
    persistence = open_persistence(settings.db, accept_database_loss=settings.accept_database_loss)
    if hasattr(persistence, "inline_max_writes"):  # SQLite
        persistence.inline_max_writes = settings.sqlite_inline_max_writes
    if settings.test_slow_disk_s > 0:
        from marketpulse.reactive.persistence._slow_disk import inject_slow_disk

        inject_slow_disk(persistence, settings.test_slow_disk_s, settings.test_slow_disk_every_s)
        structlog.get_logger("marketpulse.serve").warning(
            "slow disk injected (tests and benchmarks only)",
            sleep_s=settings.test_slow_disk_s,
            every_s=settings.test_slow_disk_every_s,
        )
    engine = await Engine.open(
        persistence,
        modules,
        limits=RunLimits(
            query_time_limit=settings.query_timeout_s,
            mutation_time_limit=settings.query_timeout_s,
            max_result_bytes=settings.max_result_bytes,
            inline_query_s=settings.work_slice_s,
        ),
        relaxed_flush_s=settings.relaxed_flush_ms / 1000.0,
    )
    origins = OriginPolicy(tuple(settings.cors_origins), settings.cors_credentials)
    runner = SchedulerRunner(engine)
    try:
        await runner.start()
    except BaseException:
        await engine.close()
        raise
    gateway = gateway_for(
        engine, admin_key, settings.connection_limits(), verifier=verifier, origins=origins
    )
    if verifier is not None:
        verifier.warm_up()  # the first token need not wait for its provider's keys

    async def close() -> None:
        await runner.stop()
        await engine.close()
        if verifier is not None:
            await verifier.aclose()

    return gateway, close
