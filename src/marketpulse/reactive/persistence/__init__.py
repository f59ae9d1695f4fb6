"""Durable storage behind the engine.

The engine needs three things from a store (:class:`Persistence`): ``load()`` every document
and the latest commit timestamp at startup, ``write(commit)`` durably (in ts order), and
``close()``. :func:`open_persistence` picks an implementation from a URL.

SQLite (``sqlite:PATH``) is the default and the only implementation so far.

Adding PostgreSQL (several server nodes sharing one commit log) without touching the engine:
a ``PostgresPersistence`` keeps an append-only ``commits(ts BIGINT PRIMARY KEY, writes JSONB)``
log plus a ``documents`` table maintained in the same transaction. ``write(commit)`` appends
only if the log's newest ts is still ``commit.base_ts`` (checked under a row lock or an
advisory lock), else raises :class:`CommitConflict`; ``load`` reads ``documents`` and
``max(ts)``. It also implements :class:`SharedLog`: ``remote_commits()`` tails the log
(``LISTEN/NOTIFY`` plus ``SELECT ... WHERE ts > last``) and yields other nodes' commits. The
engine already handles both: it applies remote commits like its own (memory, ts, subscription
invalidation) and, on a conflict, waits for the newer commits, applies them and re-runs its
queued mutations (tests/reactive/engine/test_shared_log.py drives two engines over an
in-memory shared log).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from marketpulse._lazy import lazy_import

__all__ = [
    "Commit",
    "CommitConflict",
    "DocumentWrite",
    "HealthCheck",
    "Persistence",
    "PersistenceError",
    "SharedLog",
    "Snapshot",
    "SqlitePersistence",
    "UnsafeDatabase",
    "WriteNow",
    "open_persistence",
]

if TYPE_CHECKING:
    from ._types import (
        Commit,
        CommitConflict,
        DocumentWrite,
        HealthCheck,
        Persistence,
        PersistenceError,
        SharedLog,
        Snapshot,
        UnsafeDatabase,
        WriteNow,
    )
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
            "Persistence": "._types",
            "PersistenceError": "._types",
            "SharedLog": "._types",
            "Snapshot": "._types",
            "UnsafeDatabase": "._types",
            "WriteNow": "._types",
            "SqlitePersistence": ".sqlite",
        },
    )


def open_persistence(url: str, *, accept_database_loss: bool = False) -> Persistence:
    """Open the store named by ``url``.

    ``sqlite:PATH`` (also ``sqlite:///abs/path``) or ``sqlite::memory:``; ``postgresql://...``
    is reserved for the multi-node implementation.

    Args:
        url: the database.
        accept_database_loss: start even on a database that is missing, empty, another
            store's, older than the commits this store acknowledged, or corrupt (warned).

    Raises:
        ValueError: unknown or unsupported URL.
        UnsafeDatabase: the database is not the one this store last wrote (see above).
        PersistenceError: the store cannot be opened.
    """
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:") :]
        if rest.startswith("//"):
            rest = rest[2:]
        if not rest:
            raise ValueError("sqlite URL needs a path: sqlite:PATH")
        from .sqlite import SqlitePersistence

        return SqlitePersistence(rest, accept_loss=accept_database_loss)
    if url.startswith(("postgresql:", "postgres:")):
        raise ValueError("PostgreSQL persistence is not implemented yet; use sqlite:PATH")
    raise ValueError(f"unknown database URL {url!r}; expected sqlite:PATH")
