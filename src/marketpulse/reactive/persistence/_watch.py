"""A running store's watch over its files, on its own thread (never the event loop's).

About once a second it (1) rewrites the marker beside the database when the last durable
commit moved on (``_identity.py``), and (2) compares the database file and its WAL with the
files the store opened (device and inode): a file deleted or replaced under a running store
means every later commit would go to a file nobody will ever open again, so the watch names
that once in the log and the store stops acknowledging writes (``lost``).

The commit path only stores ``committed_ts``; all the file work happens here.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import structlog

from ._failures import FailureLog
from ._identity import Marker, write_marker

__all__ = ["DatabaseWatch", "file_change"]

log = structlog.get_logger("marketpulse.persistence")

FileId = tuple[int, int]


def _file_id(path: str) -> FileId | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def file_change(what: str, path: str, opened: FileId | None, now: FileId | None) -> str | None:
    """Why ``path`` is no longer the file the store opened (``opened``), or None.

    ``opened`` None means the file was not there yet (a WAL is made on first use): nothing
    to compare.
    """
    if opened is None:
        return None
    if now is None:
        return f"the {what} {path} was deleted while the store was running"
    if now != opened:
        return f"the {what} {path} was replaced by another file while the store was running"
    return None


class DatabaseWatch:
    """Keeps the marker current and notices the database's files deleted or replaced.

    Args:
        database: the database file (its WAL is ``<database>-wal``).
        marker_file: the marker beside it.
        marker: the marker as written at start (the store's id and durable ts).
        interval: seconds between two looks.
    """

    def __init__(self, database: str, marker_file: Path, marker: Marker, interval: float) -> None:
        self.database = database
        self.wal = f"{database}-wal"
        self.marker_file = marker_file
        self.store_id = marker.store_id
        self.interval = interval
        self.committed_ts = marker.ts
        """The newest durable commit's ts; the store's writer sets it, this thread reads it."""
        self.lost: str | None = None
        """Why the store must stop acknowledging writes (set once, never cleared)."""
        self._written_ts = marker.ts
        self._db_id = _file_id(database)
        self._wal_id = _file_id(self.wal)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._marker_failures = FailureLog("cannot write the database's marker file")

    def start(self) -> None:
        """Start looking, on a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="sqlite-watch", daemon=True)
        self._thread.start()

    def halt(self) -> None:
        """Stop looking, without waiting."""
        self._stop.set()

    def stop(self) -> None:
        """Stop looking, once any look under way is done (then write the marker a last time:
        exact after a clean close)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def check(self) -> None:
        """One look (what the thread does every ``interval``)."""
        if self.lost is None:
            if self._wal_id is None:
                self._wal_id = _file_id(self.wal)
            reason = file_change(
                "database file", self.database, self._db_id, _file_id(self.database)
            )
            reason = reason or file_change("WAL", self.wal, self._wal_id, _file_id(self.wal))
            if reason is not None:
                self.lost = (
                    f"{reason}; commits written now would be lost, so this store no longer "
                    "acknowledges writes (restart it once the file is back: it refuses to "
                    "start on the wrong data)"
                )
                log.error("database lost", reason=self.lost, last_durable_ts=self.committed_ts)
                # The marker keeps the store's knowledge of what it acknowledged, even when its
                # folder went with the database, so the next start refuses instead of starting
                # empty.
                self._written_ts = -1
        if self.committed_ts != self._written_ts or not self.marker_file.exists():
            self.write_marker()

    def set_aside_wal(self) -> None:
        """After a loss, once the connection is closed: move this store's WAL out of the way.

        Left at ``<database>-wal``, SQLite would replay it onto whatever file is at the path
        next (say, the file that replaced ours), mixing two databases' pages. It is kept as
        ``<database>-wal.lost-<unix time>`` for whoever wants to recover from it.
        """
        if self.lost is None or self._wal_id is None or _file_id(self.wal) != self._wal_id:
            return
        aside = f"{self.wal}.lost-{int(time.time())}"
        try:
            os.replace(self.wal, aside)
        except OSError as exc:
            log.error("cannot set the lost database's WAL aside", wal=self.wal, error=str(exc))
            return
        log.warning("set the lost database's WAL aside", wal=aside)

    def write_marker(self) -> None:
        """Write the marker with the newest durable ts now (a failure is logged, rate-limited)."""
        ts = self.committed_ts
        try:
            self.marker_file.parent.mkdir(parents=True, exist_ok=True)
            write_marker(self.marker_file, Marker(self.store_id, ts))
        except OSError as exc:
            self._marker_failures.report(f"{self.marker_file}: {exc}")
            return
        self._written_ts = ts

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # the watch must outlive any surprise
                log.exception("database watch failed")
