"""bench/sync_latency.py runs end to end (a tiny configuration) and reports every receipt, ours
and its Redis pub/sub baseline's."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from .bench_run import BENCH, run_bench

pytestmark = pytest.mark.e2e


def test_bench_reports_all_receipts_and_its_figures() -> None:
    figures, _ = run_bench(
        "sync_latency.py", "--subscribers", "20", "--rounds", "3", "--gap", "0.05", timeout=120
    )
    assert figures["receipts"] == figures["expected_receipts"] == 60
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert figures["server_fanout_cpu_ms_per_commit"] > 0
    assert figures["redis_receipts"] == 60
    assert 0 < figures["redis_p50_ms"] <= figures["redis_p99_ms"] <= figures["redis_max_ms"]
    assert figures["redis_cpu_ms_per_publish"] > 0
    assert figures["p99_vs_redis"] == round(figures["p99_ms"] / figures["redis_p99_ms"], 2)
    # The store's loop lag over the rounds alone, and apart from it while the subscribers
    # connected: both windows hold samples (one every 10 ms).
    assert figures["loop"]["n"] > 0 and figures["loop_connecting"]["n"] > 0
    host = figures["host"]
    assert 0 < host["run_busy_pct"] <= 100 and 0 <= host["run_steal_pct"] <= 100


def test_cpu_shares_over_a_run() -> None:
    sys.path.insert(0, str(BENCH))
    from _common import cpu_shares, cpu_times

    # user nice system idle iowait irq softirq steal guest guest_nice
    before = [100, 0, 50, 1000, 5, 0, 5, 10, 0, 0]
    after = [400, 0, 150, 1480, 5, 0, 25, 110, 0, 0]
    assert cpu_shares(before, after) == {"busy_pct": 42.0, "steal_pct": 10.0}
    assert cpu_shares(None, after) == {} and cpu_shares(after, after) == {}
    now = cpu_times()
    assert now is None or len(now) >= 8


def test_scrape_loop_asks_for_its_series_and_reads_their_buckets() -> None:
    sys.path.insert(0, str(BENCH))
    import httpx
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from _common import GC_ANY, GC_PAUSE, LAG, scrape_loop

    registry = CollectorRegistry()
    lag = Histogram(LAG, "lag", buckets=[0.001, 0.005], registry=registry)
    gc_pause = Histogram(
        GC_PAUSE, "gc", labelnames=["generation"], buckets=[0.001, 0.005], registry=registry
    )
    lag.observe(0.002)
    gc_pause.labels("2").observe(0.003)
    gc_pause.labels("0").observe(0.0001)
    asked: list[str] = []

    def metrics(request: httpx.Request) -> httpx.Response:
        asked.extend(request.url.params.get_list("name[]"))
        return httpx.Response(200, content=generate_latest(registry))

    with httpx.Client(transport=httpx.MockTransport(metrics)) as http:
        out = scrape_loop(http, "http://store")
    assert f"{LAG}_bucket" in asked and f"{GC_PAUSE}_bucket" in asked
    inf = float("inf")
    assert out[LAG] == {0.001: 0.0, 0.005: 1.0, inf: 1.0}
    assert out[GC_PAUSE] == {0.001: 0.0, 0.005: 1.0, inf: 1.0}  # generation 2 only
    assert out[GC_ANY] == {0.001: 1.0, 0.005: 2.0, inf: 2.0}  # every generation


def test_redis_subscriber_parses_its_frames_across_any_split() -> None:
    sys.path.insert(0, str(BENCH))
    import orjson

    from sync_latency import _MESSAGE, _SUBSCRIBE, _SUBSCRIBED, RedisSubscriber

    class Transport(asyncio.Transport):
        def __init__(self) -> None:
            super().__init__()
            self.written = b""
            self.aborted = False

        def write(self, data: Any) -> None:
            self.written += bytes(data)

        def abort(self) -> None:
            self.aborted = True

    def feed(sub: RedisSubscriber, data: bytes) -> None:
        buffer = sub.get_buffer(len(data))
        buffer[: len(data)] = data
        sub.buffer_updated(len(data))

    payloads = [orjson.dumps({"seq": seq, "stampNs": str(10**18 + seq)}) for seq in (1, 2, 3)]
    stream = _SUBSCRIBED + b"".join(_MESSAGE + b"%d\r\n%s\r\n" % (len(p), p) for p in payloads)

    async def run(step: int) -> list[Any]:
        values: list[Any] = []
        sub = RedisSubscriber(lambda value, ns: values.append(value))
        transport = Transport()
        sub.connection_made(transport)
        assert transport.written == _SUBSCRIBE
        for i in range(0, len(stream), step):
            feed(sub, stream[i : i + step])
        assert sub.subscribed.done() and sub.subscribed.exception() is None
        return values

    for step in (1, 2, 5, 13, len(stream)):
        assert asyncio.run(run(step)) == [orjson.loads(p) for p in payloads], step

    async def refused() -> None:
        sub = RedisSubscriber(lambda value, ns: None)
        transport = Transport()
        sub.connection_made(transport)
        with pytest.raises(RuntimeError, match="unexpected reply"):
            feed(sub, b"-NOAUTH Authentication required.\r\n")
        assert transport.aborted
        with pytest.raises(RuntimeError):
            sub.subscribed.result()

    asyncio.run(refused())
