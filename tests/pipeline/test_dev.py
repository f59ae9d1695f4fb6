"""``marketpulse dev``: brings the whole system up, stops it with no orphan, keeps its data."""

from __future__ import annotations

import importlib.util
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from marketpulse._process import marketpulse_env
from marketpulse.testing import AdminClient, DevProcess, free_port
from polling import wait_until
from proctree import alive, descendants

pytestmark = [
    pytest.mark.timeout(400),
    pytest.mark.skipif(
        importlib.util.find_spec("marketpulse.reactive.server") is None,
        reason="needs the store server (marketpulse serve)",
    ),
]


def query(url: str, path: str, args: dict[str, object]) -> object:
    with AdminClient(url, timeout=10, format="json") as client:
        return client.query(path, args)


def signed_in_query(url: str, token: str) -> int:
    """The HTTP status of a public query sent with a user token."""
    response = httpx.post(
        f"{url}/api/query",
        json={"path": "marketData:getStreamStatus", "args": {}},
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )
    return response.status_code


def run_dev(data: Path, ports: dict[str, int], log: Path, seed: int = 1) -> DevProcess:
    dev = DevProcess(
        data,
        log_path=log,
        port=ports["store"],
        temporal_port=ports["temporal"],
        ui_port=ports["ui"],
        simulator_port=ports["sim"],
        sim_markets=4,
        sim_rate=100,
        seed=seed,
    )
    return dev.start(timeout=180)


def stop_and_check(dev: DevProcess, sig: int) -> None:
    tree = descendants(dev.pid)
    assert len(tree) >= 4  # temporal, store, simulator, worker (and their children)
    os.kill(dev.pid, sig)  # only the launcher, as a terminal's Ctrl-C would
    assert dev.process is not None
    assert dev.process.wait(90) == 0
    end = time.monotonic() + 10
    while any(alive(p) for p in tree) and time.monotonic() < end:
        time.sleep(0.1)
    assert not [p for p in tree if alive(p)], "orphan processes left behind"


def test_dev_runs_everything_stops_cleanly_and_keeps_its_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ports = {"store": free_port(), "temporal": free_port(), "ui": free_port(), "sim": free_port()}
    url = f"http://127.0.0.1:{ports['store']}"
    log = tmp_path / "dev.log"

    proc = run_dev(data, ports, log)
    try:
        assert httpx.get(f"{url}/", timeout=10).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ports['ui']}/", timeout=10).status_code == 200
        end = time.monotonic() + 30
        while not query(url, "marketData:getStreamStatus", {}):
            assert time.monotonic() < end
            time.sleep(0.2)
        status = query(url, "marketData:getStreamStatus", {})
        assert isinstance(status, list)
        tickers = status[0]["markets"]
        assert len(tickers) == 4
        end = time.monotonic() + 30
        while query(url, "marketData:getOrderbook", {"ticker": tickers[0]}) is None:
            assert time.monotonic() < end
            time.sleep(0.2)
        key_file = data / "admin_key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        text = log.read_text()
        assert f"http://127.0.0.1:{ports['store']}/" in text
        assert key not in text
        # Users sign in through the dev issuer: its key is kept 0600, its tokens are accepted.
        assert f"{url}/auth/dev/sign-in" in text
        assert stat.S_IMODE((data / "dev_auth_key.pem").stat().st_mode) == 0o600
        signed = httpx.post(f"{url}/auth/dev/token", json={"name": "Dana"}, timeout=10).json()
        assert signed_in_query(url, signed["token"]) == 200
        assert signed_in_query(url, signed["token"] + "x") == 401
    finally:
        stop_and_check(proc, signal.SIGTERM)

    # Another seed: the simulator lists other tickers, so the resumed stream follows them.
    proc = run_dev(data, ports, log, seed=2)
    try:
        assert (data / "admin_key").read_text().strip() == key
        # The dev issuer kept its key: a token from the last run still signs in.
        assert signed_in_query(url, signed["token"]) == 200
        # The store kept its data across the restart, and the workflow was resumed.
        assert query(url, "marketData:getMarket", {"ticker": tickers[0]}) is not None
        assert "resumed (markets renewed) kalshi-stream-sim" in log.read_text()
        new = httpx.get(f"http://127.0.0.1:{ports['sim']}/_sim/markets", timeout=10).json()
        assert not set(new["markets"]) & set(tickers)
        end = time.monotonic() + 60
        while query(url, "marketData:getOrderbook", {"ticker": new["markets"][0]}) is None:
            assert time.monotonic() < end
            time.sleep(0.2)
        assert query(url, "marketData:getOrderbook", {"ticker": tickers[0]}) is None
    finally:
        stop_and_check(proc, signal.SIGINT)


@pytest.mark.parametrize(
    ("nodes", "db", "error"),
    [
        (3, None, "--store-nodes needs --db postgresql://"),
        (2, "sqlite:/tmp/x.sqlite", "--store-nodes needs --db postgresql://"),
        (-1, "postgresql://h/db", "must be 1 or more"),
    ],
)
def test_store_nodes_options_are_checked_before_anything_starts(
    nodes: int, db: str | None, error: str
) -> None:
    from marketpulse.pipeline._dev import DevOptions

    with pytest.raises(ValueError, match=error):
        DevOptions(store_nodes=nodes, db=db).check()
    DevOptions().check()  # plain dev: SQLite, no balancer
    DevOptions(store_nodes=3, db="postgresql://h/db").check()


def test_a_second_dev_on_the_same_data_or_ports_says_so_and_leaves_the_first_alone(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    ports = {"store": free_port(), "temporal": free_port(), "ui": free_port(), "sim": free_port()}
    first = run_dev(data, ports, tmp_path / "dev.log")
    try:
        before = first.ready_info()
        env = {**os.environ, **marketpulse_env(), "MARKETPULSE_ADMIN_KEY": ""}
        argv = first.argv()[:-2]  # without its ready file
        # The same data directory: refused at once, naming the dev that holds it.
        second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        said = " ".join(second.stdout.split())  # the console wraps long lines
        assert f"another marketpulse dev (pid {first.pid}) is running on {data}" in said
        assert "✓" not in said  # nothing was reported as started
        # Another data directory on the same ports: refused at the first port in use. Before,
        # each child's readiness probe was answered by the first dev's: the second dev said
        # everything had started, restarted the first's stream, then restarted its own dead
        # children for two minutes.
        argv[argv.index("--data-dir") + 1] = str(tmp_path / "other")
        second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"127.0.0.1:{ports['temporal']} is already in use" in " ".join(second.stdout.split())
        assert first.poll() is None and first.ready_info() == before

        def connected() -> bool:  # the first's stream goes on (it may still be connecting)
            status = query(first.url, "marketData:getStreamStatus", {})
            return isinstance(status, list) and bool(status) and status[0]["state"] == "connected"

        wait_until(connected, 90, "the first dev's stream to be connected")
    finally:
        stop_and_check(first, signal.SIGTERM)


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--port", "99999"), ("--temporal-port", "0"), ("--simulator-port", "70000"),
     ("--sim-markets", "0")],
)  # fmt: skip
def test_bad_numbers_are_refused_before_anything_starts(
    tmp_path: Path, flag: str, value: str
) -> None:
    # `--port 99999` used to start Temporal, then fail with the end of the store's log: a
    # pydantic traceback.
    data = tmp_path / "data"
    argv = [sys.executable, "-m", "marketpulse", "dev", "--data-dir", str(data), flag, value]
    env = {**os.environ, **marketpulse_env()}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"Invalid value for '{flag}'" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not data.exists()


async def test_dev_store_nodes_accept_the_dev_tokens_any_of_them_issued(
    tmp_path: Path, postgres_url: str
) -> None:
    """The store nodes of ``dev --store-nodes`` share the dev key and one issuer, the
    balancer's: a token signed through it is accepted whichever node a call lands on (each
    node named its own address before, and refused the others' tokens)."""
    from rich.console import Console

    from marketpulse.pipeline._dev import DevOptions, _Dev

    opts = DevOptions(data_dir=tmp_path / "data", port=free_port(), db=postgres_url, store_nodes=2)
    dev = _Dev(opts, Console(quiet=True))
    dev.data.mkdir(parents=True)
    dev.logs.mkdir()
    dev.admin_key = "dev-test-admin-key"
    try:
        await dev._start_store()
        base = f"http://127.0.0.1:{opts.port}"
        issued = httpx.post(f"{base}/auth/dev/token", json={"name": "ada"}, timeout=10).json()
        assert issued["issuer"] == f"{base}/auth/dev"
        nodes = [p for label, p in dev.procs.items() if label.startswith("store-")]
        assert len(nodes) == 2
        for node in nodes:
            answer = httpx.post(
                f"{node.url}/api/query",
                json={"path": "watchlists:list", "args": {}, "format": "json"},
                headers={"authorization": f"Bearer {issued['token']}"},
                timeout=10,
            )
            assert answer.json() == {"status": "success", "value": []}, answer.text
    finally:
        await dev.stop()
