"""Binds the engine (docs/interfaces.md §2) to the front doors: identities, kinds, limits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marketpulse.reactive.access import AdminKeyAuth, Caller
from marketpulse.reactive.engine import Engine, Identity
from marketpulse.reactive.functions import FunctionModule, canonical_path
from marketpulse.reactive.gateway import Gateway, OriginPolicy
from marketpulse.reactive.limits import ConnectionLimits, RunLimits
from marketpulse.reactive.persistence import open_persistence

if TYPE_CHECKING:
    from marketpulse.reactive._cli import ServeSettings

__all__ = ["gateway_for", "identity_of", "open_gateway"]


def identity_of(caller: Caller) -> Identity:
    """The engine identity of an authenticated caller."""
    if caller.kind == "admin":
        # Admin "acting as" a user runs as that user, as Convex's admin impersonation does.
        return Identity.for_user(caller.acting_as) if caller.acting_as else Identity.admin()
    return Identity.anonymous()


def gateway_for(
    engine: Engine,
    admin_key: str | None,
    limits: ConnectionLimits | None = None,
    origins: OriginPolicy | None = None,
) -> Gateway:
    """A gateway serving ``engine``; ``admin_key`` None means no caller is admin."""

    def function_kind(path: str) -> str | None:
        try:
            spec = engine.functions.get(canonical_path(path))
        except ValueError:
            return None
        return spec.kind if spec is not None else None

    return Gateway(
        engine=engine,
        auth=AdminKeyAuth(admin_key),
        identity_of=identity_of,
        function_kind=function_kind,
        limits=limits or ConnectionLimits(),
        origins=origins or OriginPolicy(),
    )


def _ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite:") and ":memory:" not in url:
        path = url.removeprefix("sqlite:")
        if path.startswith("///"):
            path = path[2:]
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)


async def open_gateway(
    settings: ServeSettings, admin_key: str, modules: list[FunctionModule]
) -> tuple[Gateway, Callable[[], Awaitable[Any]]]:
    """Open persistence and engine per ``settings``; returns the gateway and its closer."""
    _ensure_sqlite_dir(settings.db)
    engine = await Engine.open(
        open_persistence(settings.db),
        modules,
        limits=RunLimits(
            query_time_limit=settings.query_timeout_s,
            mutation_time_limit=settings.query_timeout_s,
            max_result_bytes=settings.max_result_bytes,
        ),
    )
    origins = OriginPolicy(tuple(settings.cors_origins), settings.cors_credentials)
    return gateway_for(engine, admin_key, settings.connection_limits(), origins), engine.close
