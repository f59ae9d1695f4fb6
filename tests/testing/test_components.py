"""The harness's process classes: a real store on a free port, start-up failures that carry
the child's log, stops that leave nothing behind, and readiness checks that time out cleanly."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from marketpulse.testing import AdminClient, ChildProcess, FunctionError, StoreProcess
from proctree import alive, descendants

pytestmark = pytest.mark.timeout(120)

MARKET = {"ticker": "KXHARNESS-1", "title": "Does the harness start a store?", "status": "active"}


def test_a_store_starts_on_a_free_port_and_answers(tmp_path: Path) -> None:
    with StoreProcess(tmp_path / "store.sqlite") as store:
        assert httpx.get(f"{store.url}/health", timeout=5).status_code == 200
        with AdminClient(store.url, store.admin_key) as admin:
            admin.mutation("marketData:upsertMarkets", {"markets": [MARKET]})
        with AdminClient(store.url) as anonymous:
            market = anonymous.query("marketData:getMarket", {"ticker": MARKET["ticker"]})
            assert market["title"] == MARKET["title"]
            with pytest.raises(FunctionError, match="Could not find public function"):
                anonymous.mutation("marketData:upsertMarkets", {"markets": [MARKET]})
        assert store.admin_key not in store.log()


def test_a_store_restarts_on_its_port_with_its_data(tmp_path: Path) -> None:
    store = StoreProcess(tmp_path / "store.sqlite")
    with store, AdminClient(store.url, store.admin_key) as admin:
        admin.mutation("marketData:upsertMarkets", {"markets": [MARKET]})
    assert store.poll() == 0
    with store, AdminClient(store.url) as anonymous:
        assert anonymous.query("marketData:getMarket", {"ticker": MARKET["ticker"]}) is not None


def test_the_database_url_stays_off_the_store_s_command_line(tmp_path: Path) -> None:
    # A PostgreSQL URL may hold a password: ps must not show it (as the admin key).
    with StoreProcess(tmp_path / "secret-name.sqlite") as store:
        cmdline = Path(f"/proc/{store.process.pid}/cmdline").read_bytes()
        assert b"secret-name" not in cmdline and b"--db" not in cmdline
        assert (tmp_path / "secret-name.sqlite").exists()  # it is the store's database


def test_a_bare_path_in_a_string_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="say sqlite:"):
        StoreProcess(str(tmp_path / "store.sqlite"), log_path=tmp_path / "s.log")


def test_a_sqlite_url_logs_beside_its_file_as_a_path_does(tmp_path: Path) -> None:
    # A ``sqlite:`` URL is a SQLite file too: it was refused with "log_path is needed when
    # the database is not a SQLite file".
    for url in (f"sqlite:{tmp_path}/a.sqlite", f"sqlite://{tmp_path}/a.sqlite"):
        store = StoreProcess(url)
        assert store.database == url and "--db" not in store.argv()
        assert store.log_path == tmp_path / "a.log"
    with pytest.raises(ValueError, match="log_path is needed"):
        StoreProcess("sqlite::memory:")


def test_a_child_that_dies_at_start_raises_with_the_end_of_its_log(tmp_path: Path) -> None:
    store = StoreProcess(tmp_path / "store.sqlite", functions="no_such_functions_module")
    with pytest.raises(RuntimeError) as failed:
        store.start()
    message = str(failed.value)
    assert message.startswith("store exited with")
    assert f"the end of {store.log_path}:" in message
    assert "no_such_functions_module" in message.split(str(store.log_path), 1)[1]


def test_stopping_leaves_no_child_process(tmp_path: Path) -> None:
    store = StoreProcess(tmp_path / "store.sqlite").start()
    pids = {store.pid} | descendants(store.pid)
    assert all(alive(pid) for pid in pids)
    assert store.stop() == 0
    end = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < end:
        time.sleep(0.05)
    assert not [pid for pid in pids if alive(pid)], "a child outlived stop()"


class _NeverReady(ChildProcess):
    """A child that runs (and says so) but never passes its readiness check."""

    name = "never-ready"
    waits_for = "listening (it never will)"

    def argv(self) -> list[str]:
        return [sys.executable, "-c", "import time; print('up, not listening', flush=True); "
                "time.sleep(600)"]  # fmt: skip

    def ready(self) -> bool:
        return False


def test_a_failing_readiness_check_times_out_cleanly(tmp_path: Path) -> None:
    child = _NeverReady(tmp_path / "never.log")
    started = time.monotonic()
    with pytest.raises(TimeoutError) as late:
        child.start(timeout=1.0)
    assert time.monotonic() - started < 10
    message = str(late.value)
    assert message.startswith("never-ready not listening (it never will) after 1s")
    assert message.endswith("up, not listening")
    assert child.poll() is not None, "a child that was not ready in time is stopped"
    assert not alive(child.pid)


def test_a_child_whose_port_is_taken_is_not_started(tmp_path: Path) -> None:
    # Its readiness probe would be answered by whatever holds the port: refuse instead.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        store = StoreProcess(tmp_path / "store.sqlite", port=port)
        with pytest.raises(RuntimeError, match=f"store cannot start: 127.0.0.1:{port} is already"):
            store.start()
        assert store.process is None
