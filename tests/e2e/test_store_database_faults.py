"""A real ``marketpulse serve`` on a damaged or failing database: a clear refusal at start (exit
code 3, one paragraph naming ``--accept-database-loss``), or, while running, clear write errors
with their real cause, ``/health`` failing with the reason, the log saying it once per
interval, and the official PyPI ``convex`` client reading on throughout. Never a silent empty
start; no acknowledged write lost silently.

Disk full is a real small tmpfs, a read-only file a real immutable file (``chattr +i``), and an
fsync I/O error a real ``fsync``/``fdatasync`` failing with EIO inside the store's process (an
``LD_PRELOAD`` shim); each test skips where this machine cannot do it (not root, no gcc).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
from convex import ConvexClient

from marketpulse.reactive._cli import EXIT_DATABASE_REFUSED
from marketpulse.testing import AdminClient, FunctionError, StoreProcess
from reactive.persistence.test_database_safety import damage_index_page

from .test_store_clients import ADMIN_KEY, example_store

pytestmark = pytest.mark.e2e

MARKER_INTERVAL_S = 1.0  # the store's; waiting 1.5 of them lets the marker catch up


def store(db: Path, tag: str, **options: Any) -> StoreProcess:
    # Beside the tmpfs, not on it: a full disk must not take the store's log with it.
    folder = db.parent.parent if db.parent.name == "small" else db.parent
    return example_store(db, log_path=folder / f"{db.name}.{tag}.log", **options)


def inc(s: StoreProcess, n: int, name: str = "c") -> float:
    value = 0.0
    with AdminClient(s.url, ADMIN_KEY, timeout=10) as admin:
        for _ in range(n):
            value = admin.mutation("counter:inc", {"name": name})
    return value


def value(s: StoreProcess, name: str = "c") -> float:
    with AdminClient(s.url, ADMIN_KEY, timeout=10) as admin:
        result: float = admin.query("counter:get", {"name": name})
        return result


def crashed_store(db: Path, writes: int = 30) -> float:
    """A store that wrote, let its marker catch up, wrote more and was SIGKILLed; returns the
    counter's last acknowledged value."""
    s = store(db, "crashed").start()
    inc(s, writes)
    time.sleep(MARKER_INTERVAL_S * 1.5)
    last = inc(s, 5)
    s.kill()
    s.stop()
    return last


def stopped_store(db: Path, writes: int = 20, tag: str = "stopped") -> float:
    with store(db, tag) as s:
        return inc(s, writes)


def assert_refused(db: Path, *words: str) -> None:
    s = store(db, "refused")
    with pytest.raises(RuntimeError, match="exited"):
        s.start(timeout=30)
    assert s.poll() == EXIT_DATABASE_REFUSED
    log = s.log()
    assert "Refusing to start on" in log and "--accept-database-loss" in log, log
    assert "Traceback" not in log
    for w in words:
        assert w in log, log


def assert_accepted_with_a_warning(db: Path, warning: str, *, writable: bool = True) -> None:
    with store(db, "accepted", extra=["--accept-database-loss"]) as s:
        assert warning in s.log()
        assert httpx.get(f"{s.url}/health").status_code == 200
        value(s)  # it serves what it has
        if writable:
            inc(s, 1)


# -- start-up ---------------------------------------------------------------------------------
def test_ordinary_restarts_after_sigkill_and_sigterm_are_not_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    last = crashed_store(db)
    with store(db, "after-kill") as s:
        assert value(s) == last
        last = inc(s, 3)
    with store(db, "after-term") as s:
        assert value(s) == last


def _missing(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def _empty(db: Path) -> None:
    db.write_bytes(b"")


def _wal_deleted(db: Path) -> None:
    Path(f"{db}-wal").unlink()


def _wal_damaged(db: Path) -> None:
    wal = Path(f"{db}-wal")
    with wal.open("r+b") as f:
        f.seek(wal.stat().st_size // 3)
        f.write(os.urandom(8192))


CRASH_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing file": (_missing, "the database file is missing"),
    "0-byte file": (_empty, "empty (0 bytes)"),
    "WAL deleted": (_wal_deleted, "holds no store"),
    "WAL damaged": (_wal_damaged, "older than ts"),
}


@pytest.mark.parametrize("case", list(CRASH_DAMAGE))
def test_damaged_after_a_crash_is_refused(tmp_path: Path, case: str) -> None:
    db = tmp_path / "s.sqlite"
    crashed_store(db)
    damage, words = CRASH_DAMAGE[case]
    damage(db)
    assert_refused(db, words)
    assert_accepted_with_a_warning(db, "starting on a database that lost data")


def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.sqlite", tmp_path / "theirs.sqlite"
    stopped_store(ours)
    stopped_store(theirs, 3)
    shutil.copyfile(theirs, ours)
    assert_refused(ours, "belongs to another store")
    assert_accepted_with_a_warning(ours, "starting on a database that lost data")


def test_an_older_copy_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    stopped_store(db, 10, "first")
    shutil.copyfile(db, tmp_path / "backup.sqlite")
    stopped_store(db, 10, "second")
    shutil.copyfile(tmp_path / "backup.sqlite", db)
    assert_refused(db, "older than ts")
    assert_accepted_with_a_warning(db, "starting on a database that lost data")


def test_a_corrupt_index_page_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    with store(db, "fill") as s, AdminClient(s.url, ADMIN_KEY, timeout=10) as admin:
        for i in range(300):
            admin.mutation("counter:inc", {"name": f"n{i}"})
    damage_index_page(db)
    assert_refused(db, "quick_check finds it corrupt")
    # It serves what it can read; a write that meets the damaged page fails, named.
    assert_accepted_with_a_warning(db, "starting on a corrupt database, as told", writable=False)


# -- while running: a convex client reads on --------------------------------------------------
class _Loop:
    """Something done over and over on its own thread while the test acts."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    @contextmanager
    def running(self) -> Iterator[Self]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(10)


class Reader(_Loop):
    """The official PyPI client querying the counter in a loop."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.client = ConvexClient(url)
        self.values: list[Any] = []
        self.errors: list[str] = []

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.values.append(self.client.query("counter:get", {"name": "c"}))
            except Exception as exc:
                self.errors.append(str(exc))

    def reads_since(self, count: int) -> list[Any]:
        return self.values[count:]


def try_inc(s: StoreProcess, n: int) -> tuple[float | None, list[str]]:
    """``n`` increments; the last acknowledged value and every error."""
    last, errors = None, []
    with AdminClient(s.url, ADMIN_KEY, timeout=10) as admin:
        for _ in range(n):
            try:
                last = admin.mutation("counter:inc", {"name": "c"})
            except FunctionError as exc:
                errors.append(str(exc))
    return last, errors


def health(s: StoreProcess) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"{s.url}/health", timeout=5)
    return r.status_code, r.json()


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


class Writer(_Loop):
    """Increments the counter back to back, as a feed writes trades."""

    def __init__(self, s: StoreProcess) -> None:
        super().__init__()
        self.store = s
        self.acknowledged: float | None = None
        self.acknowledged_count = 0
        self.errors: list[str] = []

    def _run(self) -> None:
        with AdminClient(self.store.url, ADMIN_KEY, timeout=10) as admin:
            while not self._stop.is_set():
                try:
                    self.acknowledged = admin.mutation("counter:inc", {"name": "c"})
                    self.acknowledged_count += 1
                except FunctionError as exc:
                    self.errors.append(str(exc))
                    time.sleep(0.01)


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_database_file_lost_while_running(tmp_path: Path, how: str) -> None:
    db = tmp_path / "s.sqlite"
    s = store(db, "running").start()
    try:
        with Reader(s.url).running() as reader, Writer(s).running() as writer:
            wait_until(lambda: writer.acknowledged_count > 50)
            if how == "deleted":
                db.unlink()
            else:
                stopped_store(tmp_path / "other.sqlite", 1)
                os.replace(tmp_path / "other.sqlite", db)
            lost_at = writer.acknowledged_count
            wait_until(lambda: health(s)[0] == 503)
            _, body = health(s)
            assert body["status"] == "error" and how in body["reason"]
            wait_until(lambda: len(writer.errors) > 20)
            seen = len(reader.values)
            wait_until(lambda: len(reader.values) > seen + 5)
        assert all("no longer acknowledges writes" in e for e in writer.errors)
        acknowledged = writer.acknowledged
        assert reader.values[-1] == acknowledged and not reader.errors  # reads went on
        log = s.log()
        assert log.count('"database lost"') == 1, log
        assert log.count('"store write failed"') == 1, log  # every refused write, one line
        assert "rescued every acknowledged commit" in log and "Traceback" not in log
    finally:
        s.stop()
    print(f"{how}: {writer.acknowledged_count - lost_at} writes acknowledged after the loss")
    # Restarting on the wrong data is refused, never a silent empty start...
    assert_refused(db, "missing" if how == "deleted" else "belongs to another store", "rescued")
    # ...and the rescued copy holds every acknowledged write, the ones after the loss included.
    (copy,) = db.parent.glob("s.sqlite.rescued-*")
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    os.replace(copy, db)
    with store(db, "rescued") as again:
        assert value(again) == acknowledged


def assert_write_failure_reported(
    s: StoreProcess, reader: Reader, cause: str, attempts: int = 30
) -> float:
    """Writes fail with ``cause``; /health says so; reads go on. Returns the acknowledged value."""
    acknowledged = value(s)
    seen = len(reader.values)
    last, errors = try_inc(s, attempts)
    assert last is None and len(errors) == attempts, errors
    for e in errors:
        assert cause in e and "no transaction is active" not in e, e
    status, body = health(s)
    assert status == 503 and cause in body["reason"], body
    wait_until(lambda: len(reader.values) > seen + 5)
    assert set(reader.reads_since(seen)) == {acknowledged}
    log = s.log()
    assert log.count('"store write failed"') == 1, log  # one line per cause per 10 s
    assert "Traceback" not in log and "no transaction is active" not in log
    return acknowledged


def assert_recovers(s: StoreProcess, acknowledged: float) -> None:
    assert inc(s, 1) == acknowledged + 1
    assert health(s)[0] == 200


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full(tmpfs: Path) -> None:
    db = tmpfs / "s.sqlite"
    with store(db, "full") as s, Reader(s.url).running() as r:
        inc(s, 5)
        filler = tmpfs / "filler"
        with filler.open("wb") as f:  # fill the disk: ENOSPC ends it
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        acknowledged = assert_write_failure_reported(s, r, "database or disk is full")
        filler.unlink()
        assert_recovers(s, acknowledged)
    with store(db, "after-full") as s:
        assert value(s) == acknowledged + 1


def _chattr(flag: str, *paths: Path) -> None:
    done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"chattr {flag} does not work here: {done.stderr.decode().strip()}")


def test_read_only_file(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    stopped_store(db, 3)
    _chattr("+i", db)  # immutable: even root cannot write it
    try:
        with store(db, "ro") as s, Reader(s.url).running() as r:
            assert value(s) == 3
            assert_write_failure_reported(s, r, "attempt to write a readonly database")
    finally:
        _chattr("-i", db)
    with store(db, "rw") as s:
        assert_recovers(s, 3)


def test_file_made_read_only_while_running(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    with store(db, "running") as s, Reader(s.url).running() as r:
        inc(s, 3)
        wal = Path(f"{db}-wal")
        _chattr("+i", db, wal)
        try:
            acknowledged = assert_write_failure_reported(s, r, "disk I/O error")
        finally:
            _chattr("-i", db, wal)
        assert_recovers(s, acknowledged)


FSYNC_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
static int failing(void) {
    const char *flag = getenv("FAIL_FSYNC_WHILE");
    return flag != NULL && access(flag, F_OK) == 0;
}
int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (failing()) { errno = EIO; return -1; }
    return real(fd);
}
int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (failing()) { errno = EIO; return -1; }
    return real(fd);
}
"""


def test_fsync_io_error(tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the fsync shim")
    source, shim = tmp_path / "fsync_eio.c", tmp_path / "fsync_eio.so"
    source.write_text(FSYNC_SHIM)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", shim, source, "-ldl"], check=True)
    flag = tmp_path / "fail-fsync"
    db = tmp_path / "s.sqlite"
    env = {"LD_PRELOAD": str(shim), "FAIL_FSYNC_WHILE": str(flag)}
    with store(db, "eio", env=env) as s, Reader(s.url).running() as r:
        inc(s, 3)
        flag.touch()
        try:
            acknowledged = assert_write_failure_reported(s, r, "disk I/O error")
        finally:
            flag.unlink()
        assert_recovers(s, acknowledged)
    with store(db, "after-eio") as s:
        assert value(s) == acknowledged + 1
