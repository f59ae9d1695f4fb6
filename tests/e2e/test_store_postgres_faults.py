"""PostgreSQL itself stopped and restarted under three real ``serve`` nodes, through the
official clients (npm ``convex`` via tests/js/driver.mjs, PyPI ``convex``), on a private
server (:class:`~marketpulse.testing.PostgresProcess`) that the test can take away.

While PostgreSQL is down the nodes serve queries and subscriptions from memory, mutations fail
with a clear transient error within ``write_timeout_s`` (never a hang, never a false success),
and ``/health`` answers 503 with the reason; when it is back, everything resumes by itself,
nothing acknowledged is lost or doubled, and every node equals PostgreSQL's ``documents``.

The figures the test measures are printed (``pytest -s``): time to 503 after the stop, a
failing mutation's time to its error, and time from PostgreSQL back to the first successful
mutation.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from convex import ConvexClient

from marketpulse.testing import PostgresProcess, StoreProcess
from polling import wait_until

from .js_driver import JsDriver, node_available
from .test_store_clients import is_update
from .test_store_cluster import NAMES, Nodes, Writers, assert_converged, sql

pytestmark = pytest.mark.e2e

WRITE_TIMEOUT_S = 2.0
OPTIONS = f"&write_timeout_s={WRITE_TIMEOUT_S:g}&max_lag_s=2"


def status(store: StoreProcess) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"{store.url}/health", timeout=10)
    return r.status_code, r.json()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PostgresProcess]:
    with PostgresProcess(tmp_path / "postgres.log") as pg:
        yield pg


@pytest.fixture
def nodes(server: PostgresProcess, tmp_path: Path) -> Iterator[Nodes]:
    with Nodes(server.url, tmp_path, OPTIONS).running() as ns:
        yield ns


_SAMPLER = """
import sys, time, httpx
names, urls = sys.argv[1::2], sys.argv[2::2]
with httpx.Client(timeout=5) as http:
    while True:
        for name, url in zip(names, urls):
            try:
                code = http.get(url + "/health").status_code
            except httpx.HTTPError:
                code = 0
            print(time.monotonic(), name, code, flush=True)
        time.sleep(0.1)
"""


class HealthWatch:
    """Samples every node's ``/health`` status every 0.1 s, in a process of its own: the
    PyPI client holds the GIL while a mutation waits, which would stall a thread here."""

    def __init__(self, ns: Nodes, out: Path) -> None:
        argv = [sys.executable, "-c", _SAMPLER]
        for name in NAMES:
            argv += [name, ns[name].url]
        self._out = out
        self._argv = argv
        self._proc: subprocess.Popen[bytes] | None = None
        self.samples: list[tuple[float, str, int]] = []

    def first(self, name: str, code: int, after: float) -> float | None:
        """When ``name`` first answered ``code`` after ``after`` (CLOCK_MONOTONIC is shared
        by every process)."""
        return next((t for t, n, c in self.samples if n == name and c == code and t >= after), None)

    def __enter__(self) -> HealthWatch:
        with open(self._out, "wb") as out:
            self._proc = subprocess.Popen(self._argv, stdout=out, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        self._proc.terminate()
        self._proc.wait(10)
        for line in self._out.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                self.samples.append((float(parts[0]), parts[1], int(parts[2])))


def timed_mutation(client: ConvexClient, name: str) -> tuple[float, Any, str | None]:
    """(seconds, value, error text) of one ``counter:inc``."""
    started = time.monotonic()
    try:
        value = client.mutation("counter:inc", {"name": name})
        return time.monotonic() - started, value, None
    except Exception as exc:
        return time.monotonic() - started, None, str(exc)


@pytest.mark.skipif(not node_available(), reason="node and tests/js/node_modules needed")
def test_with_postgres_stopped_nodes_serve_from_memory_and_mutations_fail_clearly(
    server: PostgresProcess, nodes: Nodes
) -> None:
    writer = ConvexClient(nodes["a"].url)
    for _ in range(3):
        writer.mutation("counter:inc", {"name": "x"})
    js = JsDriver(nodes["b"].url)
    try:
        js.send(cmd="subscribe", id="s1", path="counter:get", args={"name": "x"})
        js.wait_for(is_update("s1", 3.0))
        stopped = time.monotonic()
        server.stop()
        # How long until every node's /health says 503 (the balancer's cue).
        to_503: dict[str, float] = {}
        while len(to_503) < len(NAMES):
            assert time.monotonic() - stopped < 15, to_503
            for name in set(NAMES) - set(to_503):
                if status(nodes[name])[0] == 503:
                    to_503[name] = time.monotonic() - stopped
            time.sleep(0.05)
        # Long enough for several write timeouts and the followers' reconnect backoff.
        failures = [timed_mutation(writer, "x") for _ in range(3)]
        for seconds, value, error in failures:
            assert value is None and error is not None, "a false success"
            assert "could not be committed" in error and "PostgreSQL unreachable" in error
            assert seconds < WRITE_TIMEOUT_S + 15, seconds  # never a hang
        # Queries and subscriptions from memory, on every node, a new one too.
        assert all(nodes.value(n, "x") == 3.0 for n in NAMES)
        js.send(cmd="subscribe", id="s2", path="counter:get", args={"name": "x"})
        js.wait_for(is_update("s2", 3.0))
        for name in NAMES:
            code, body = status(nodes[name])
            assert code == 503 and body["ok"] is False, body
            assert body["database"] == "unreachable" and body["reason"], body
            # Alive all the same, and the scrape says why the balancer stopped sending.
            assert httpx.get(f"{nodes[name].url}/health/live", timeout=10).status_code == 200
            metrics = httpx.get(f"{nodes[name].url}/metrics", timeout=10).text
            assert "marketpulse_store_ready 0.0" in metrics, metrics
            assert "marketpulse_store_lag_seconds" in metrics
        time.sleep(max(0.0, 8.0 - (time.monotonic() - stopped)))  # down for a while
        server.start()
        back = time.monotonic()
        first_ok = None
        while first_ok is None:
            assert time.monotonic() - back < 60, "no mutation succeeded after the restart"
            seconds, value, error = timed_mutation(writer, "x")
            if error is None:
                first_ok = time.monotonic() - back
                assert value == 4.0  # the failed ones wrote nothing
            else:
                assert "could not be committed" in error, error
        js.wait_for(is_update("s1", 4.0))
        js.wait_for(is_update("s2", 4.0))
        wait_until(lambda: all(status(nodes[n])[0] == 200 for n in NAMES), 30, "every node healthy")
        assert js.backlog == [] or all(e["event"] != "error" for e in js.backlog), js.backlog
    finally:
        js.close()
    assert_converged(nodes)
    print(
        "\nPostgreSQL stopped: 503 after "
        + ", ".join(f"{n} {t:.2f} s" for n, t in sorted(to_503.items()))
        + "; failing mutations answered in "
        + ", ".join(f"{s:.2f} s" for s, _, _ in failures)
        + f" (write_timeout_s={WRITE_TIMEOUT_S:g}); first successful mutation "
        f"{first_ok:.2f} s after PostgreSQL accepted connections again"
    )


def test_postgres_restarted_mid_stream_loses_and_doubles_nothing(
    server: PostgresProcess, nodes: Nodes, tmp_path: Path
) -> None:
    with HealthWatch(nodes, tmp_path / "health.txt") as watch:
        writers = Writers(nodes, NAMES, "p")
        wait_until(lambda: len(writers.acked) >= 60, 60, "60 acks")
        stopped = time.monotonic()
        server.stop()
        time.sleep(4.0)
        during = len(writers.acked)
        restarting = time.monotonic()
        server.start()
        start_took = time.monotonic() - restarting
        # All resumed by themselves.
        wait_until(lambda: len(writers.acked) >= during + 90, 120, "90 more acks")
        writers.stop()
        wait_until(lambda: all(status(nodes[n])[0] == 200 for n in NAMES), 30, "every node healthy")
    assert writers.failed, "the restart came after every write"
    writers.assert_each_acknowledged_once()
    assert_converged(nodes)
    for name in NAMES:  # 503 while PostgreSQL was away, 200 again after
        down = watch.first(name, 503, stopped)
        assert down is not None, name
        assert watch.first(name, 200, down) is not None, name
    # From the server's own "ready" line: the writer threads (the PyPI client holds the GIL
    # while a mutation waits) can delay this process's start() and its probe by seconds.
    ready = [ln for ln in server.log().splitlines() if "ready to accept connections" in ln][-1]
    ready_at = datetime.strptime(ready[:23], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    first_ok = min(t for t in writers.acked_at if t > ready_at.timestamp()) - ready_at.timestamp()
    print(
        f"\nPostgreSQL restarted mid-stream: {len(writers.acked)} acknowledged,"
        f" {len(writers.failed)} failed; first acknowledged write {first_ok:.2f} s after"
        f" PostgreSQL logged it was ready (start() took {start_took:.2f} s here)"
    )


def test_a_node_refuses_a_recreated_database_its_marker_does_not_know(
    postgres_url: str, tmp_path: Path
) -> None:
    url = f"{postgres_url}?data_dir={tmp_path / 'node-a'}"
    with StoreProcess(
        url,
        log_path=tmp_path / "a.log",
        functions="example_functions",
        pythonpath=[Path(__file__).parent],
    ) as a:
        ConvexClient(a.url).mutation("counter:inc", {"name": "x"})
    for table in ("store", "log_head", "commits", "documents", "mutation_log", "nodes"):
        sql(postgres_url, f"DROP TABLE {table}")
    again = StoreProcess(url, log_path=tmp_path / "a2.log")
    with pytest.raises(RuntimeError, match="exited with 3"):
        again.start()
    assert "holds no store" in again.log() and "--accept-database-loss" in again.log()
    assert "Traceback" not in again.log()
    with StoreProcess(url, log_path=tmp_path / "a3.log", extra=["--accept-database-loss"]) as b:
        assert status(b)[0] == 200
