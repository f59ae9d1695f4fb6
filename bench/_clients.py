"""Fleets of subscribers in child processes: our sync clients, lean one-query sockets spread
over several store nodes and source addresses, or redis-py pub/sub subscribers.

A fleet is split over a few spawned processes (the clients' own CPU must not share the
measuring process's event loop). Every client records, for each pushed value whose
``updatedAt`` (ours) or ``ts`` (Redis) is new, the pair (receipt epoch ms, latency ms).
Latency is receipt time minus the stamp the producer put in the update, both from this
machine's wall clock.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

CONNECT_CONCURRENCY = 100

Sample = tuple[float, float]
"""(receipt epoch ms, latency ms)."""


async def _sync_fleet(
    url: str, subs: list[list[tuple[str, dict[str, Any]]]], ready: Any, stop: Any
) -> dict[str, Any]:
    from marketpulse.reactive.sync.client import LightSyncClient

    samples: list[Sample] = []
    measuring = False

    class Client(LightSyncClient):
        last: dict[int, Any]

        def _on_transition(self, message: dict[str, Any], now: float, size: int) -> None:
            super()._on_transition(message, now, size)
            _record(message, self.last, time.time() * 1000, samples if measuring else None)

    ws_url = LightSyncClient.ws_url(url)
    clients = []
    for _ in subs:
        client = Client(ws_url, keep_transitions=False)
        client.last = {}
        clients.append(client)
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def start(client: LightSyncClient, mine: list[tuple[str, dict[str, Any]]]) -> None:
        async with gate:
            await client.connect()
            for path, args in mine:
                await client.subscribe(path, args)

    await asyncio.gather(*(start(c, mine) for c, mine in zip(clients, subs, strict=True)))
    want = sum(len(mine) for mine in subs)
    deadline = time.monotonic() + 120
    while sum(len(c.values) + len(c.errors) for c in clients) < want:
        if time.monotonic() > deadline:
            raise TimeoutError("subscriptions did not all get their first value")
        await asyncio.sleep(0.05)
    measuring = True
    _quiet_gc()
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    dropped = sum(c.failure is not None for c in clients)
    errors = sum(len(c.errors) for c in clients)
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return {"samples": samples, "dropped": dropped, "errors": errors}


def _record(
    message: dict[str, Any], last: dict[int, Any], at: float, samples: list[Sample] | None
) -> int:
    """Append (``at``, latency) for each value in a Transition whose ``updatedAt`` is new to its
    query (to ``samples`` unless None: not measuring yet); returns how many queries failed."""
    failed = 0
    for mod in message["modifications"]:
        if mod.get("type") == "QueryFailed":
            failed += 1
        value = mod.get("value")
        if not isinstance(value, dict) or "updatedAt" not in value:
            continue
        stamp = value["updatedAt"]
        if last.get(mod["queryId"]) == stamp:
            continue
        last[mod["queryId"]] = stamp
        if samples is not None and stamp:
            samples.append((at, at - float(stamp)))
    return failed


async def _raw_fleet(
    subs: list[tuple[str, str | None, str, dict[str, Any]]], ready: Any, stop: Any
) -> dict[str, Any]:
    """One ``RawSubscriber`` socket per entry (ws url, source address or None, path, args).

    The source address lets a fleet pass the ~28k ephemeral ports of one address pair.
    """
    from websockets.uri import parse_uri

    from marketpulse.reactive.admission import raise_fd_limit
    from marketpulse.reactive.sync.client import RawSubscriber

    raise_fd_limit()
    loop = asyncio.get_running_loop()
    samples: list[Sample] = []
    measuring = False
    failed = 0
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def start(url: str, source: str | None, path: str, args: dict[str, Any]) -> Any:
        nonlocal failed
        last: dict[int, Any] = {}

        def on_transition(message: dict[str, Any], received_ns: int) -> None:
            nonlocal failed
            failed += _record(message, last, received_ns / 1e6, samples if measuring else None)

        uri = parse_uri(url)
        async with gate:
            _, proto = await loop.create_connection(
                lambda: RawSubscriber(url, path, args, on_transition),
                uri.host,
                uri.port,
                local_addr=(source, 0) if source else None,
            )
            await asyncio.wait_for(proto.subscribed, 120)
        return proto

    protos = await asyncio.gather(*(start(*sub) for sub in subs))
    measuring = True
    _quiet_gc()
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    dropped = sum(p.failure is not None or p._transport.is_closing() for p in protos)
    for proto in protos:
        proto.close()
    return {"samples": samples, "dropped": dropped, "errors": failed}


async def _redis_fleet(channels: list[list[str]], ready: Any, stop: Any) -> dict[str, Any]:
    import redis.asyncio as aioredis

    samples: list[Sample] = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def start(mine: list[str]) -> Any:
        async with gate:
            conn = aioredis.Redis(host="127.0.0.1", port=6379, single_connection_client=True)
            pubsub = conn.pubsub()
            await pubsub.subscribe(*mine)
            return pubsub

    pubsubs = await asyncio.gather(*(start(mine) for mine in channels))

    async def listen(pubsub: Any) -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                at = time.time() * 1000
                samples.append((at, at - float(orjson.loads(message["data"])["ts"])))

    tasks = [asyncio.create_task(listen(p)) for p in pubsubs]
    await asyncio.sleep(0.3)
    samples.clear()
    _quiet_gc()
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(p.aclose() for p in pubsubs), return_exceptions=True)
    return {"samples": samples, "dropped": 0, "errors": 0}


def _quiet_gc() -> None:
    """Keep the load generator's own GC pauses out of the latencies it measures.

    With thousands of clients in one process a full collection takes hundreds of ms, and
    every push queued behind it looks late (seen at 5k-10k clients, for Redis's subscribers
    as much as for ours). Everything allocated while connecting is frozen out of collection
    and automatic collection is off while measuring (refcounting still frees the garbage).
    """
    gc.collect()
    gc.freeze()
    gc.disable()


def _child(kind: str, url: str, subs: list[Any], ready: Any, stop: Any, out: Any) -> None:
    if kind == "sync":
        result = asyncio.run(_sync_fleet(url, subs, ready, stop))
    elif kind == "raw":
        result = asyncio.run(_raw_fleet(subs, ready, stop))
    else:
        result = asyncio.run(_redis_fleet(subs, ready, stop))
    out.put(result)


@dataclass
class Fleet:
    """Subscribers in ``processes`` children; use as a context manager.

    Args:
        kind: ``sync`` (our store, ``subs`` = per client a list of (query path, args)),
            ``raw`` (one query per socket, ``subs`` = per socket (ws url, source address or
            None, query path, args); ``url`` unused) or ``redis`` (``subs`` = per client a
            list of channel names).
        url: The store's http URL (``sync`` only).
        subs: One entry per client.
        processes: How many child processes share the clients.
        ready_timeout_s: How long the clients may take to connect and get their first values.
    """

    kind: str
    url: str
    subs: list[Any]
    processes: int = 2
    ready_timeout_s: float = 180.0
    samples: list[Sample] = field(default_factory=list)
    dropped: int = 0
    errors: int = 0
    _procs: list[Any] = field(default_factory=list)

    def __enter__(self) -> Fleet:
        ctx = mp.get_context("spawn")
        self._out = ctx.Queue()
        self._stop = ctx.Event()
        readies = []
        # A child costs about a second to start; small fleets need only one.
        processes = self.processes if len(self.subs) > 300 else 1
        for index in range(processes):
            mine = self.subs[index::processes]
            if not mine:
                continue
            ready = ctx.Event()
            proc = ctx.Process(
                target=_child, args=(self.kind, self.url, mine, ready, self._stop, self._out)
            )
            proc.start()
            self._procs.append(proc)
            readies.append(ready)
        deadline = time.monotonic() + self.ready_timeout_s
        while not all(r.is_set() for r in readies):
            if time.monotonic() > deadline or any(p.exitcode is not None for p in self._procs):
                self._kill()
                raise RuntimeError(f"{self.kind}: subscribers did not get ready")
            time.sleep(0.05)
        return self

    def _kill(self) -> None:
        self._stop.set()
        for proc in self._procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        try:
            for _ in self._procs:
                result = self._out.get(timeout=60)
                self.samples += result["samples"]
                self.dropped += result["dropped"]
                self.errors += result["errors"]
        finally:
            self._kill()

    def between(self, start_ms: float, end_ms: float) -> list[float]:
        """Latencies of the samples received in [start_ms, end_ms)."""
        return [lat for at, lat in self.samples if start_ms <= at < end_ms]
