"""Commit-to-receipt latency of one query's updates fanned out to many WebSocket subscribers.

A real ``marketpulse serve`` runs in a subprocess (fresh SQLite file). Subscriber processes open
N WebSockets with the lean spec client (``RawSubscriber`` in marketpulse.reactive.sync.client,
websockets' sans-I/O protocol; a test checks it sees what the official client sees), all
subscribed to ``bench:latest``, each Transition timestamped as its bytes are parsed. A writer commits
``bench:stamp`` once per round, spaced so rounds don't overlap; the mutation stamps wall-clock
time inside itself, and each subscriber records when the Transition carrying that stamp
arrived. Baselines in the same run: the same rounds with a single subscriber, and Redis
pub/sub with the same subscribers in the same processes (``RedisSubscriber``: one SUBSCRIBE
per socket, each message timestamped as its bytes arrive, the stamp taken just before each
PUBLISH). Redis shows what the host and the measuring processes allow: on 2 cores the store,
the subscribers and the kernel's loopback work share the CPU, and Redis's fan-out pays the
same loopback sends and wakes the same subscriber processes. Redis's own CPU per ``PUBLISH``
(``INFO cpu`` around its rounds) is printed beside the store's CPU per commit's fan-out: the
kernel's share of a loopback send is in both.

    python bench/sync_latency.py [--quick] [--subscribers 1000] [--rounds N] [--procs 2]
                                 [--no-redis]

Prints a table, then one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))

import httpx  # noqa: E402
import orjson  # noqa: E402

from _clients import _exit_with_parent, _quiet_gc  # noqa: E402
from _common import FLEET_FLAGS, emit, loop_summary, scrape_loop  # noqa: E402
from marketpulse.reactive.sync.client import LightSyncClient, RawSubscriber  # noqa: E402
from marketpulse.testing import StoreProcess, percentile  # noqa: E402

QUERY = "bench:latest"
"""The query every store subscriber watches (``sync_latency_app``)."""
CHANNEL = b"bench:latest"
"""The Redis channel of the baseline, named after the query."""
REDIS = ("127.0.0.1", 6379)


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


_SUBSCRIBE = b"*2\r\n" + _bulk(b"SUBSCRIBE") + _bulk(CHANNEL)
_SUBSCRIBED = b"*3\r\n" + _bulk(b"subscribe") + _bulk(CHANNEL) + b":1\r\n"
_MESSAGE = b"*3\r\n" + _bulk(b"message") + _bulk(CHANNEL) + b"$"
_READ_BUFFER = memoryview(bytearray(256 * 1024))  # one per process: reads are back to back


class RedisSubscriber(asyncio.BufferedProtocol):
    """Redis's side of the baseline, as lean as ``RawSubscriber`` is on ours: one socket
    subscribed to :data:`CHANNEL`, each message timestamped the moment its bytes are read.

    Written here rather than with redis-py: its ``PubSub.listen()`` needs a task per
    connection (a task switch per receipt that ``RawSubscriber`` does not pay), and hiredis,
    whose reader would parse this, would also change redis-py's parser under every other
    benchmark's Redis baseline. Only the two frames a subscribed RESP2 socket receives here
    are accepted: the subscription's confirmation and ``message`` frames on this channel.

    ``on_value(value, received_ns)`` is called with each message's JSON payload.
    """

    def __init__(self, on_value: Any) -> None:
        self._on_value = on_value
        self._pending = bytearray()
        self._transport: asyncio.Transport | None = None
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(_SUBSCRIBE)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError(f"redis closed the socket: {exc}"))

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        received_ns = time.time_ns()
        buf = self._pending
        buf += _READ_BUFFER[:nbytes]
        while buf:
            if buf.startswith(_MESSAGE):
                eol = buf.find(b"\r\n", len(_MESSAGE))
                if eol < 0:
                    return
                start = eol + 2
                end = start + int(buf[len(_MESSAGE) : eol])
                if len(buf) < end + 2:
                    return
                self._on_value(orjson.loads(buf[start:end]), received_ns)
                del buf[: end + 2]
            elif buf.startswith(_SUBSCRIBED):
                del buf[: len(_SUBSCRIBED)]
                if not self.subscribed.done():
                    self.subscribed.set_result(None)
            elif _MESSAGE.startswith(buf) or _SUBSCRIBED.startswith(buf):
                return  # the first bytes of a frame
            else:
                error = RuntimeError(f"unexpected reply from redis: {bytes(buf[:80])!r}")
                if not self.subscribed.done():
                    self.subscribed.set_exception(error)
                assert self._transport is not None
                self._transport.abort()
                raise error

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _subscribers(
    kind: str, url: str, n: int, ready: Any, go: Any, out: Any, rounds: int
) -> None:
    receipts: list[tuple[int, int]] = []
    done = asyncio.Event()
    finished = 0  # subscribers that saw the last round (a count: O(1) per receipt)

    def on_value(value: Any, received_ns: int) -> None:
        nonlocal finished
        if isinstance(value, dict) and "stampNs" in value:
            seq = int(value["seq"])
            receipts.append((seq, received_ns - int(value["stampNs"])))
            if seq == rounds:
                finished += 1
                if finished == n:
                    done.set()

    def on_transition(message: dict[str, Any], received_ns: int) -> None:
        for mod in message["modifications"]:
            on_value(mod.get("value"), received_ns)

    loop = asyncio.get_running_loop()
    factory: Any
    if kind == "redis":
        host, port = REDIS
        factory = lambda: RedisSubscriber(on_value)  # noqa: E731
    else:
        host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        factory = lambda: RawSubscriber(url, QUERY, {}, on_transition)  # noqa: E731
    subscribers = []
    for _ in range(n):
        _, sub = await loop.create_connection(factory, host, int(port))
        subscribers.append(sub)
    await asyncio.gather(*(s.subscribed for s in subscribers))
    _quiet_gc()  # as bench/_clients.py's fleets: no collector pauses in the receipts
    ready.set()
    await loop.run_in_executor(None, go.wait)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout=30 + rounds)
    out.send([r for r in receipts if r[0] > 0])
    for sub in subscribers:
        sub.close()


def subscriber_proc(
    kind: str, url: str, n: int, ready: Any, go: Any, out: Any, rounds: int
) -> None:
    _exit_with_parent()
    asyncio.run(_subscribers(kind, url, n, ready, go, out, rounds))


async def _write_rounds(url: str, rounds: int, gap_s: float) -> None:
    writer = await LightSyncClient(url, keep_transitions=False).connect()
    for seq in range(1, rounds + 1):
        response = await writer.request("Mutation", "bench:stamp", {"seq": seq})
        if not response["success"]:
            raise RuntimeError(response)
        await asyncio.sleep(gap_s)
    await writer.close()


async def _publish_rounds(rounds: int, gap_s: float) -> None:
    import redis.asyncio as aioredis

    conn = aioredis.Redis(host=REDIS[0], port=REDIS[1])
    try:
        for seq in range(1, rounds + 1):
            stamp = str(time.time_ns())
            await conn.publish(CHANNEL, orjson.dumps({"seq": seq, "stampNs": stamp}))
            await asyncio.sleep(gap_s)
    finally:
        await conn.aclose()


def redis_cpu_s() -> float:
    """Redis's own CPU seconds so far (``INFO cpu``: its user and system time, all threads)."""
    import redis

    with redis.Redis(host=REDIS[0], port=REDIS[1]) as conn:
        info = conn.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def fanout_seconds(http_url: str) -> tuple[float, float, float]:
    """The server's own fan-out figures from /metrics: (wall s sum, count, cpu s sum)."""
    text = httpx.get(http_url + "/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        for name in ("fanout_seconds_sum", "fanout_seconds_count", "fanout_cpu_seconds_total"):
            if line.startswith("marketpulse_sync_" + name + " "):
                values[name] = float(line.split()[-1])
    return (
        values.get("fanout_seconds_sum", 0.0),
        values.get("fanout_seconds_count", 0.0),
        values.get("fanout_cpu_seconds_total", 0.0),
    )


def measure(
    url: str,
    subscribers: int,
    procs: int,
    rounds: int,
    gap_s: float,
    kind: str = "store",
    mark: Callable[[str], None] = lambda phase: None,
) -> list[int]:
    """Latencies in ns of every (subscriber, round) receipt: of the store at ``url``, or of
    Redis pub/sub with ``kind="redis"``. ``mark("rounds")`` is called once every subscriber is
    subscribed, ``mark("done")`` after the last round, before they disconnect."""
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    workers = []
    per = [subscribers // procs + (1 if i < subscribers % procs else 0) for i in range(procs)]
    for n in per:
        if n == 0:
            continue
        ready = ctx.Event()
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=subscriber_proc, args=(kind, url, n, ready, go, child, rounds))
        p.start()
        workers.append((p, ready, parent))
    if kind == "store":
        # The first write creates the document every subscriber then waits for (seq 0).
        asyncio.run(_seed(url))
    for _, ready, _ in workers:
        if not ready.wait(120):
            raise RuntimeError("subscribers did not get ready")
    go.set()
    time.sleep(0.3)
    mark("rounds")
    if kind == "store":
        asyncio.run(_write_rounds(url, rounds, gap_s))
    else:
        asyncio.run(_publish_rounds(rounds, gap_s))
    mark("done")
    latencies: list[int] = []
    for p, _, parent in workers:
        latencies.extend(lat for _, lat in parent.recv())
        p.join(30)
    return latencies


async def _seed(url: str) -> None:
    writer = await LightSyncClient(url, keep_transitions=False).connect()
    await writer.request("Mutation", "bench:stamp", {"seq": 0})
    await writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--gap", type=float, default=0.1, help="seconds between commits")
    ap.add_argument("--url", help="use a running store serving sync_latency_app instead")
    ap.add_argument(
        "--no-redis", action="store_true", help="skip the Redis pub/sub baseline (127.0.0.1:6379)"
    )
    args = ap.parse_args()
    rounds = args.rounds or (20 if args.quick else 100)

    loop: dict[str, Any] = {}
    connecting: dict[str, Any] = {}

    def run(http_url: str) -> tuple[list[int], list[int], float, float]:
        url = LightSyncClient.ws_url(http_url)
        base = measure(url, 1, 1, rounds, args.gap)
        before = fanout_seconds(http_url)
        with httpx.Client(timeout=10) as http:
            # The store's event loop (its /metrics histograms) while the subscribers connect
            # and subscribe, and apart from that over the rounds of fan-out.
            scraped = {"start": scrape_loop(http, http_url)}

            def mark(phase: str) -> None:
                scraped[phase] = scrape_loop(http, http_url)

            fan = measure(url, args.subscribers, args.procs, rounds, args.gap, mark=mark)
            connecting.update(loop_summary(scraped["start"], scraped["rounds"]))
            loop.update(loop_summary(scraped["rounds"], scraped["done"]))
        after = fanout_seconds(http_url)
        # One commit per round; the histogram counts loop turns (a wide fan-out takes several).
        commits = rounds
        server_ms = (after[0] - before[0]) / commits * 1000 if commits else float("nan")
        cpu_ms = (after[2] - before[2]) / commits * 1000 if commits else float("nan")
        return base, fan, server_ms, cpu_ms

    if args.url:
        base, fan, server_ms, cpu_ms = run(args.url)
    else:
        with (
            tempfile.TemporaryDirectory() as tmp,
            StoreProcess(
                Path(tmp) / "bench.sqlite",
                functions="sync_latency_app",
                pythonpath=[HERE],
                env={"MARKETPULSE_LOG_LEVEL": "warning"},
                extra=FLEET_FLAGS,
            ) as store,
        ):
            base, fan, server_ms, cpu_ms = run(store.url)
    # After ours, with the store stopped: the same subscribers, processes and rounds.
    redis: list[int] = []
    redis_cpu_ms = None
    if not args.no_redis:
        cpu_before = redis_cpu_s()
        redis = measure("", args.subscribers, args.procs, rounds, args.gap, "redis")
        redis_cpu_ms = (redis_cpu_s() - cpu_before) / rounds * 1000

    expected = args.subscribers * rounds
    rows = [
        ("1 subscriber (baseline)", base, rounds),
        (f"{args.subscribers} subscribers", fan, expected),
    ]
    if redis:
        rows.append((f"{args.subscribers} on Redis pub/sub", redis, expected))
    print(f"{'case':<28}{'receipts':>12}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name, lat, want in rows:
        print(
            f"{name:<28}{f'{len(lat)}/{want}':>12}{percentile(lat, 50) / 1e6:>10.2f}"
            f"{percentile(lat, 99) / 1e6:>10.2f}{(max(lat) / 1e6 if lat else float('nan')):>10.2f}"
        )
    print(
        f"server-side fan-out per commit (write to all {args.subscribers}): "
        f"{server_ms:.2f} ms wall, {cpu_ms:.2f} ms CPU"
    )
    if redis_cpu_ms is not None:
        print(f"Redis's CPU per PUBLISH to all {args.subscribers}: {redis_cpu_ms:.2f} ms")
    for phase, lag in (
        ("the rounds of fan-out", loop),
        ("the subscribers' connecting", connecting),
    ):
        if lag:
            print(
                f"store event loop during {phase}: lag p50/p99/p999 {lag['p50_ms']:.2f} / "
                f"{lag['p99_ms']:.2f} / {lag['p999_ms']:.2f} ms, largest <= "
                f"{lag['max_le_ms']:g} ms; gen-2 GCs {lag['gc2_pauses']:g}, largest <= "
                f"{lag['gc2_max_le_ms']:g} ms (CPU <= {lag['gc2_cpu_max_le_ms']:g} ms)"
            )

    def ms(latencies: list[int], pct: float) -> float:
        """The ``pct`` percentile of ``latencies`` (ns) in ms (NaN for none)."""
        return round(percentile(latencies, pct) / 1e6, 3)

    redis_p99 = ms(redis, 99) if redis else None
    p99 = ms(fan, 99)
    load = os.getloadavg()[0]
    print(f"load average during the run: {load:.2f} on {os.cpu_count()} cpus")
    figures = {
        "bench": "sync_latency",
        "subscribers": args.subscribers,
        "rounds": rounds,
        "client_procs": args.procs,
        "baseline_p50_ms": ms(base, 50),
        "baseline_p99_ms": ms(base, 99),
        "p50_ms": ms(fan, 50),
        "p99_ms": p99,
        "max_ms": round(max(fan) / 1e6, 3) if fan else None,
        "mean_ms": round(statistics.fmean(fan) / 1e6, 3) if fan else None,
        "receipts": len(fan),
        "expected_receipts": expected,
        "redis_p50_ms": ms(redis, 50) if redis else None,
        "redis_p99_ms": redis_p99,
        "redis_max_ms": round(max(redis) / 1e6, 3) if redis else None,
        "redis_receipts": len(redis),
        "p99_vs_redis": round(p99 / redis_p99, 2) if redis_p99 else None,
        "server_fanout_ms_per_commit": round(server_ms, 3),
        "server_fanout_cpu_ms_per_commit": round(cpu_ms, 3),
        "redis_cpu_ms_per_publish": None if redis_cpu_ms is None else round(redis_cpu_ms, 3),
        "load_avg_1m": round(load, 2),
        "goal_p99_ms": 20,
        "cpus": os.cpu_count(),
        "loop": loop,
        "loop_connecting": connecting,
    }
    emit(figures)


if __name__ == "__main__":
    main()
