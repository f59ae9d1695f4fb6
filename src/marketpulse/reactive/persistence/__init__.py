"""Durable storage behind the engine.

The engine needs three things from a store (:class:`Persistence`): ``load()`` every document
and the latest commit timestamp at startup, ``write(commit)`` durably (in ts order), and
``close()``. :func:`open_persistence` picks an implementation from a URL.

SQLite (``sqlite:PATH``) is the default: one node, one file.

PostgreSQL (``postgresql://...``, :class:`PostgresPersistence`) lets several server nodes
share one commit log: ``write(commit)`` appends only if the log's newest ts is still
``commit.base_ts`` (checked under a row lock), else raises :class:`CommitConflict`; it also
implements :class:`SharedLog`: ``remote_commits()`` tails the log (``LISTEN/NOTIFY`` plus a
catch-up read by ts) and yields other nodes' commits. The engine applies remote commits like
its own (memory, ts, subscription invalidation) and, on a conflict, waits for the newer
commits, applies them and re-runs its queued mutations.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote_plus

from marketpulse._lazy import lazy_import

__all__ = [
    "RECEIPT_AGE_NS",
    "RECEIPT_MAX",
    "Commit",
    "CommitConflict",
    "DocumentWrite",
    "HealthCheck",
    "NodeLiveness",
    "Persistence",
    "PersistenceError",
    "PostgresPersistence",
    "Readiness",
    "ReadinessCheck",
    "Receipt",
    "SharedLog",
    "Snapshot",
    "SqlitePersistence",
    "UnsafeDatabase",
    "WriteNow",
    "database_kind",
    "open_persistence",
    "shown_url",
    "sqlite_path",
]

if TYPE_CHECKING:
    from ._types import (
        RECEIPT_AGE_NS,
        RECEIPT_MAX,
        Commit,
        CommitConflict,
        DocumentWrite,
        HealthCheck,
        NodeLiveness,
        Persistence,
        PersistenceError,
        Readiness,
        ReadinessCheck,
        Receipt,
        SharedLog,
        Snapshot,
        UnsafeDatabase,
        WriteNow,
    )
    from .postgres import PostgresPersistence
    from .sqlite import SqlitePersistence
else:
    # The engine needs only the types; SQLite loads when a store is opened.
    lazy_import(
        globals(),
        {
            "Commit": "._types",
            "CommitConflict": "._types",
            "DocumentWrite": "._types",
            "HealthCheck": "._types",
            "NodeLiveness": "._types",
            "Persistence": "._types",
            "PersistenceError": "._types",
            "RECEIPT_AGE_NS": "._types",
            "RECEIPT_MAX": "._types",
            "Readiness": "._types",
            "ReadinessCheck": "._types",
            "Receipt": "._types",
            "SharedLog": "._types",
            "Snapshot": "._types",
            "UnsafeDatabase": "._types",
            "WriteNow": "._types",
            "SqlitePersistence": ".sqlite",
            "PostgresPersistence": ".postgres",
        },
    )


def open_persistence(url: str, *, accept_database_loss: bool = False) -> Persistence:
    """Open the store named by ``url``.

    ``sqlite:PATH`` (also ``sqlite:///abs/path``) or ``sqlite::memory:`` for one node;
    ``postgresql://user@host:port/database`` for several nodes sharing one commit log (its
    query string may carry the log's options: ``write_timeout_s``, ``retention_s``,
    ``compact_interval_s``, ``node_timeout_s``, ``max_lag_s``, ``node``, ``data_dir``).

    Args:
        url: the database.
        accept_database_loss: start even on a database that is missing, empty, another
            store's, older than the commits this store acknowledged, or corrupt (warned).

    Raises:
        ValueError: unknown or unsupported URL.
        UnsafeDatabase: the database is not the one this store last wrote (see above).
        PersistenceError: the store cannot be opened.
    """
    path = sqlite_path(url)
    if path is not None:
        if not path:
            raise ValueError("sqlite URL needs a path: sqlite:PATH")
        from .sqlite import SqlitePersistence

        return SqlitePersistence(path, accept_loss=accept_database_loss)
    from .postgres import from_url

    return from_url(url, accept_loss=accept_database_loss)


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:PATH`` (or ``sqlite:///abs/path``) URL, ``~`` expanded;
    ``":memory:"`` for ``sqlite::memory:``; ``""`` for no path; None for any other URL.

    Raises:
        ValueError: neither ``sqlite:`` nor ``postgresql://`` (see :func:`database_kind`).
    """
    if database_kind(url) != "sqlite":
        return None
    path = url.removeprefix("sqlite:").removeprefix("//")
    return path if path in ("", ":memory:") else os.path.expanduser(path)


_SECRET_OPTIONS = frozenset({"password", "sslpassword"})


def shown_url(url: str) -> str:
    """``url`` as logs and error messages may show it: without its user and password, and
    with a password given as a query option (``?password=...``, which libpq and asyncpg
    take) replaced by ``***``."""
    shown = url.split("@")[-1]
    base, sep, query = shown.partition("?")
    if not sep:
        return shown
    options = []
    for option in query.split("&"):
        key, eq, _ = option.partition("=")
        secret = unquote_plus(key).strip().lower() in _SECRET_OPTIONS
        options.append(f"{key}{eq}***" if secret else option)
    return f"{base}?{'&'.join(options)}"


def database_kind(url: str) -> Literal["sqlite", "postgresql"]:
    """Which persistence ``url`` names, without opening it (a command checks its flag with it
    before starting anything).

    Raises:
        ValueError: neither ``sqlite:`` nor ``postgresql://`` (``postgres://``); a bare file
            path is told to say ``sqlite:PATH``.
    """
    if url.startswith("sqlite:"):
        return "sqlite"
    if url.startswith(("postgresql:", "postgres:")):
        return "postgresql"
    shown = shown_url(url)  # never echo a password
    hint = f"; for a SQLite file say sqlite:{shown}" if "://" not in url else ""
    raise ValueError(
        f"unknown database URL {shown!r}; expected sqlite:PATH or postgresql://...{hint}"
    )
