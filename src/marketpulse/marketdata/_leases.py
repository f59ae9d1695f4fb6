"""Stream leases: the store, not the worker, decides when a stream's books and prices are live.

Each stream holds a lease (``leases`` table, one doc per stream id). A batch that carries
``leaseMs`` renews it until ``now + leaseMs``; the worker sends one only while its feed is
heard from, and an empty one about once a second when the market is quiet. The
``expireLeases`` cron (every second) marks a lapsed lease dead and, with it, every book and
price its stream wrote (``live: false``, :data:`STALE_BATCH` documents a run, the rest by runs
it schedules at once), and the stream (``getStreamStatus``). A store restart marks every lease
dead before it accepts clients (``resetLeases``, run again while it answers ``more``), so
nothing is served as live until its writer renews.

A renewal of a dead lease answers ``revived``: whatever was marked stale stays stale until
written again, so the worker then re-sends the full current state of its markets.

Documents written by a batch without a ``streamId`` belong to no lease: they are live as
written (the seed's contract for direct writers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marketpulse.reactive.engine import DatabaseWriter, IndexRange

__all__ = [
    "MAX_LEASE_MS",
    "MIN_LEASE_MS",
    "STALE_BATCH",
    "expire_leases",
    "lease_live",
    "renew_lease",
    "reset_leases",
]

MIN_LEASE_MS = 500.0
MAX_LEASE_MS = 60_000.0
"""Bounds of a batch's ``leaseMs``: a lease above a minute would serve a dead stream as live."""

_STREAMED = ("books", "prices")


def _lease(db: DatabaseWriter, stream_id: str) -> dict[str, Any] | None:
    doc: dict[str, Any] | None = (
        db.query("leases").with_index("by_stream", lambda q: q.eq("streamId", stream_id)).first()
    )
    return doc


def lease_live(db: DatabaseWriter, stream_id: str) -> bool:
    """Whether ``stream_id`` holds a live lease now (as last decided by a renewal or expiry)."""
    doc = _lease(db, stream_id)
    return bool(doc is not None and doc.get("live"))


def renew_lease(db: DatabaseWriter, stream_id: str, lease_ms: float, now_ms: float) -> bool:
    """Renew the stream's lease until ``now_ms + lease_ms``; True when it was dead (revived)."""
    doc = _lease(db, stream_id)
    until = now_ms + lease_ms
    if doc is None:
        db.insert("leases", {"streamId": stream_id, "expiresAt": until, "live": True})
        _mark_stream(db, stream_id, live=True)
        return True
    revived = not doc.get("live")
    db.patch(doc["_id"], {"expiresAt": until, "live": True})
    if revived:
        _mark_stream(db, stream_id, live=True)
    return revived


def _mark_stream(db: DatabaseWriter, stream_id: str, *, live: bool) -> None:
    doc = db.query("streams").with_index("by_stream", lambda q: q.eq("streamId", stream_id)).first()
    if doc is not None and doc.get("live") != live:
        db.patch(doc["_id"], {"live": live})


STALE_BATCH = 500
"""Most books and prices one expiry marks stale (~4 ms of a mutation: patching takes ~8 µs a
document in process). A larger stream is marked by more runs, each a mutation of its own, so
that no one stalls the store's loop: marking the 160,000 documents of 80,000 markets in one
mutation ran past its time limit and failed every second."""


def _mark_stale(db: DatabaseWriter, stream_ids: set[str]) -> tuple[int, bool]:
    """Mark live books and prices of these streams stale, at most :data:`STALE_BATCH`;
    returns how many docs, and whether more are left."""
    marked = 0
    for stream_id in sorted(stream_ids):
        for table in _STREAMED:
            budget = STALE_BATCH - marked
            docs = (
                db.query(table).with_index("by_stream_live", _live_of(stream_id)).take(budget + 1)
            )
            for doc in docs[:budget]:
                db.patch(doc["_id"], {"live": False})
            marked += min(len(docs), budget)
            if len(docs) > budget:
                return marked, True
    return marked, False


def _live_of(stream_id: str) -> Callable[[IndexRange], IndexRange]:
    return lambda q: q.eq("stream", stream_id).eq("live", True)


def expire_leases(db: DatabaseWriter, now_ms: float) -> dict[str, int | bool]:
    """Mark the leases lapsed by ``now_ms`` dead, and their streams' books and prices stale
    (with those a dead lease has left live: see :data:`STALE_BATCH`)."""
    leases = db.query("leases").with_index("by_stream").collect()
    lapsed = [doc for doc in leases if doc.get("live") and doc["expiresAt"] < now_ms]
    for doc in lapsed:
        db.patch(doc["_id"], {"live": False})
        _mark_stream(db, doc["streamId"], live=False)
    # Dead before this run, or lapsed in it (``leases`` holds the docs as read, live).
    dead = {doc["streamId"] for doc in leases if not doc.get("live") or doc["expiresAt"] < now_ms}
    stale, more = _mark_stale(db, dead) if dead else (0, False)
    return {"expired": len(lapsed), "stale": stale, "more": more}


def reset_leases(db: DatabaseWriter) -> dict[str, int | bool]:
    """Mark every lease dead (a store start): nothing is live until its writer renews. Call
    again while the answer says ``more`` (at most :data:`STALE_BATCH` documents a call)."""
    leases = db.query("leases").with_index("by_stream").collect()
    expired = 0
    for doc in leases:
        if doc.get("live"):
            expired += 1
            db.patch(doc["_id"], {"live": False})
        _mark_stream(db, doc["streamId"], live=False)
    streams = {doc["streamId"] for doc in leases}
    stale, more = _mark_stale(db, streams) if streams else (0, False)
    return {"expired": expired, "stale": stale, "more": more}
