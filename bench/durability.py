"""Relaxed vs durable ``applyUpdates`` at 1,000 messages/s, beside Redis in the same run.

In process, the real engine on an SQLite file with 1,000 live ``getOrderbook`` subscriptions
(200 markets), as ``bench/commit_path.py`` sets it up. Batches of 6 market updates are offered
on a fixed schedule (1,000 messages/s: one batch every 6 ms), in alternating blocks of the
same run: ``applyUpdates`` as declared (``durability="relaxed"``: answered once applied and
re-run, written by the next group flush) and the same function made durable (answered after
its fsync). Latency runs from a batch's *scheduled* time to its answer, when the subscribed
queries it touched have been re-run and their listeners notified: a batch that had to wait
(for an earlier fsync, or a flush of relaxed commits on the loop's thread) counts its wait.

Baseline, same schedule, same run: Redis (127.0.0.1:6379, its configuration printed) gets
each batch as one pipelined ``HSET`` per market plus a ``PUBLISH`` of the batch, and a redis-py
subscriber in this process receives it; latency from the scheduled time to that receipt.

    python bench/durability.py [--seconds 20] [--rate 1000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, print_table
from marketdata_apply import batch, seed_books
from marketpulse.marketdata.functions import marketData
from marketpulse.reactive.engine import Engine, Identity
from marketpulse.reactive.persistence.sqlite import SqlitePersistence
from marketpulse.testing import summarize_ms

MARKETS = 200
SUBSCRIBERS = 1000
PER_BATCH = 6
RATE = 1000.0  # messages/s
BLOCK = 200  # batches per block; blocks alternate between the variants
VARIANTS = ("relaxed", "durable")


def _say(what: str) -> None:
    print(f"[durability] {what}", file=sys.stderr, flush=True)


def _changed(n: int) -> list[int]:
    return [(n * 37 + k) % MARKETS for k in range(PER_BATCH)]


async def _paced(count: int, interval: float, send: Any) -> None:
    """Call ``await send(n, scheduled)`` for ``count`` batches, one per ``interval`` s (late
    ones at once: their wait is part of their latency)."""
    start = time.perf_counter()
    for i in range(count):
        scheduled = start + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(i, scheduled)


async def ours(
    blocks: int, interval: float, directory: Path
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Latencies from the schedule, and service times (from the call), per variant."""
    engine = await Engine.open(SqlitePersistence(directory / "durability.db"), [marketData])
    admin = Identity.admin()
    spec = engine.functions["marketData:applyUpdates"]
    assert spec.durability == "relaxed"
    specs = {"relaxed": spec, "durable": dataclasses.replace(spec, durability="durable")}
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    service: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        await seed_books(engine, MARKETS, SUBSCRIBERS)
        n = 0
        for b in range(blocks):
            variant = VARIANTS[b % len(VARIANTS)]

            async def send(_: int, scheduled: float, variant: str = variant) -> None:
                nonlocal n
                n += 1
                body = {"batch": batch(n, _changed(n))}
                called = time.perf_counter()
                result = await engine.run_mutation_spec(specs[variant], body, admin)
                done = time.perf_counter()
                samples[variant].append((done - scheduled) * 1000)
                service[variant].append((done - called) * 1000)
                assert result.success, result.error_message

            await _paced(BLOCK, interval, send)
        return samples, service
    finally:
        await engine.close()


async def redis_baseline(count: int, interval: float) -> tuple[list[float], dict[str, str]]:
    import redis.asyncio as aioredis

    conn = aioredis.Redis(host="127.0.0.1", port=6379)
    sub_conn = aioredis.Redis(host="127.0.0.1", port=6379)
    config = {
        k: str(v)
        for k, v in (await conn.config_get("appendonly")).items()  # type: ignore[misc]
    }
    config.update(
        {k: str(v) for k, v in (await conn.config_get("appendfsync")).items()}  # type: ignore[misc]
    )
    pubsub = sub_conn.pubsub()
    await pubsub.subscribe("bench-durability")
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    samples: list[float] = []
    scheduled_at: dict[int, float] = {}

    async def receive() -> None:
        while len(samples) < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
            if message is None:
                continue
            n = int(orjson.loads(message["data"])["n"])
            samples.append((time.perf_counter() - scheduled_at.pop(n)) * 1000)

    async def send(i: int, scheduled: float) -> None:
        body = batch(i + 1, _changed(i + 1))
        scheduled_at[i] = scheduled
        pipe = conn.pipeline(transaction=False)
        for book in body["books"]:
            pipe.hset("bench-durability-books", book["ticker"], orjson.dumps(book))
        pipe.publish("bench-durability", orjson.dumps({"n": i, "batch": body}))
        await pipe.execute()

    receiver = asyncio.create_task(receive())
    try:
        await _paced(count, interval, send)
        async with asyncio.timeout(30):
            await receiver
    finally:
        receiver.cancel()
        await pubsub.aclose()
        await conn.delete("bench-durability-books")
        await conn.aclose()
        await sub_conn.aclose()
    return samples, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="of offered load per side")
    parser.add_argument("--rate", type=float, default=RATE, help="messages/s offered")
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    seconds = 4.0 if opts.quick else opts.seconds
    rate = opts.rate
    interval = PER_BATCH / rate
    batches = max(2 * BLOCK, int(seconds / interval) // (2 * BLOCK) * (2 * BLOCK))
    with tempfile.TemporaryDirectory(prefix="bench-durability-") as tmp:
        _say(f"ours: {batches} batches of {PER_BATCH}, relaxed and durable blocks alternating")
        samples, service = asyncio.run(ours(batches // BLOCK, interval, Path(tmp)))
    _say("redis baseline")
    redis_samples, redis_config = asyncio.run(redis_baseline(batches // 2, interval))
    figures = {v: summarize_ms(samples[v]) for v in VARIANTS}
    figures["redis"] = summarize_ms(redis_samples)
    service_figures = {v: summarize_ms(service[v]) for v in VARIANTS}
    keys = ("p50_ms", "p99_ms", "p999_ms", "max_ms")
    print_table(
        f"applyUpdates at {rate:,.0f} msgs/s ({PER_BATCH} markets a batch, {SUBSCRIBERS} "
        f"subscriptions): scheduled time -> answered and re-run",
        ["variant", "n", "p50 ms", "p99 ms", "p999 ms", "max ms"],
        [[name, f["n"], *(f[k] for k in keys)] for name, f in figures.items()],
    )

    print_table(
        "the same batches' service time: call -> answered and re-run (no wait for the schedule)",
        ["variant", "n", "p50 ms", "p99 ms", "p999 ms", "max ms"],
        [[name, f["n"], *(f[k] for k in keys)] for name, f in service_figures.items()],
    )

    def ratios(a: str, b: str) -> dict[str, float]:
        return {k: round(figures[a][k] / figures[b][k], 2) for k in keys if figures[b][k] > 0}

    compared = {
        "relaxed_vs_durable": ratios("relaxed", "durable"),
        "relaxed_vs_redis": ratios("relaxed", "redis"),
        "durable_vs_redis": ratios("durable", "redis"),
    }
    for name, r in compared.items():
        print(name.replace("_", " ") + ": " + ", ".join(f"{k} x{v}" for k, v in r.items()))
    print(f"redis config: {redis_config}")
    emit(
        {
            "bench": "durability",
            "rate": rate,
            "batches": batches,
            "figures": figures,
            "service": service_figures,
            "ratios": compared,
            "redis_config": redis_config,
        }
    )


if __name__ == "__main__":
    main()
