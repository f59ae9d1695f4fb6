"""Stream leases: the store, not the worker, decides when a stream's books and prices are live.

Each stream holds a lease (``leases`` table, one doc per stream id). A batch that carries
``leaseMs`` renews it until ``now + leaseMs``; the worker sends one only while its feed is
heard from, and an empty one about once a second when the market is quiet. The
``expireLeases`` cron (every second) marks a lapsed lease dead and, with it, every book and
price its stream wrote (``live: false``), and the stream (``getStreamStatus``). A store restart
marks every lease dead before it accepts clients (``resetLeases``), so nothing is served as
live until its writer renews.

A renewal of a dead lease answers ``revived``: whatever was marked stale stays stale until
written again, so the worker then re-sends the full current state of its markets.

Documents written by a batch without a ``streamId`` belong to no lease: they are live as
written (the seed's contract for direct writers).
"""

from __future__ import annotations

from typing import Any

from marketpulse.reactive.engine import DatabaseWriter

__all__ = [
    "MAX_LEASE_MS",
    "MIN_LEASE_MS",
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


def _mark_stale(db: DatabaseWriter, stream_ids: set[str]) -> int:
    """Mark every live book and price of these streams stale; returns how many docs."""
    stale: list[str] = []
    for table in _STREAMED:
        for doc in db.query(table).with_index("by_ticker").collect():
            if doc.get("stream") in stream_ids and doc.get("live", True):
                stale.append(doc["_id"])
    for doc_id in stale:
        db.patch(doc_id, {"live": False})
    for stream_id in stream_ids:
        _mark_stream(db, stream_id, live=False)
    return len(stale)


def expire_leases(db: DatabaseWriter, now_ms: float) -> dict[str, int]:
    """Mark the leases lapsed by ``now_ms`` dead, and their streams' books and prices stale."""
    lapsed = [
        doc
        for doc in db.query("leases").with_index("by_stream").collect()
        if doc.get("live") and doc["expiresAt"] < now_ms
    ]
    if not lapsed:
        return {"expired": 0, "stale": 0}
    stale = _mark_stale(db, {doc["streamId"] for doc in lapsed})
    for doc in lapsed:
        db.patch(doc["_id"], {"live": False})
    return {"expired": len(lapsed), "stale": stale}


def reset_leases(db: DatabaseWriter) -> dict[str, int]:
    """Mark every lease dead (a store start): nothing is live until its writer renews."""
    leases = [doc for doc in db.query("leases").with_index("by_stream").collect()]
    streams = {doc["streamId"] for doc in leases}
    stale = _mark_stale(db, streams) if streams else 0
    for doc in leases:
        if doc.get("live"):
            db.patch(doc["_id"], {"live": False})
    return {"expired": sum(1 for d in leases if d.get("live")), "stale": stale}
