"""Fleets of subscribers in child processes: our sync clients, lean one-query sockets spread
over several store nodes and source addresses, or redis-py pub/sub subscribers.

A fleet is split over a few spawned processes (the clients' own CPU must not share the
measuring process's event loop). Every client records, for each pushed value whose
``updatedAt`` (ours) or ``ts`` (Redis) is new, the pair (receipt epoch ms, latency ms).
Latency is receipt time minus the stamp the producer put in the update, both from this
machine's wall clock. Lean sockets may instead only count their pushes once subscribed (frame
headers read in bulk, see ``_Drain``), so that a big fleet costs far less than the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing as mp
import os
import select
import socket
import struct
import threading
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


DRAIN_INTERVAL_S = 1.0
"""How often a fleet process reads its draining sockets, all at once: the bytes wait in the
kernel meanwhile, so one read takes several pushes and the node's writes are unaffected."""

_DRAIN_READ_BYTES = 256 * 1024


class FrameCounter:
    """Counts the text frames in a server's byte stream (unmasked, unfragmented) without
    parsing them: only each frame's 2-10 byte header is read, the payload is skipped."""

    __slots__ = ("_head", "_skip", "frames")

    def __init__(self) -> None:
        self.frames = 0
        self._skip = 0  # payload bytes of the current frame still to come
        self._head = b""  # a header split between two reads

    def feed(self, data: bytes | memoryview) -> int:
        """Take the next bytes of the stream; returns how many text frames began in them."""
        if self._head:
            data = self._head + bytes(data)
            self._head = b""
        size = len(data)
        pos = self._skip
        frames = 0
        while pos < size:
            if size - pos < 2:
                self._head = bytes(data[pos:])
                pos = size
                break
            length = data[pos + 1] & 0x7F
            head = 2 if length < 126 else 4 if length == 126 else 10
            if size - pos < head:
                self._head = bytes(data[pos:])
                pos = size
                break
            if head > 2:
                length = int.from_bytes(data[pos + 2 : pos + head], "big")
            if data[pos] & 0x0F == 1:
                frames += 1
            pos += head + length
        self._skip = pos - size
        self.frames += frames
        return frames


class _Drain:
    """Sockets past their subscription, read in bulk every :data:`DRAIN_INTERVAL_S` by one
    epoll of their own (asyncio no longer watches them): per push, a header read instead of a
    loop callback, a frame parse and a JSON decode, so the fleet costs far less than the node
    writing to it. Frames counted per read pass make the pushes delivered."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._counters: dict[int, FrameCounter] = {}
        self._buffer = bytearray(_DRAIN_READ_BYTES)
        self.received: list[tuple[float, int]] = []
        """(epoch ms of a read pass, frames it counted)."""
        self.closed = 0

    def add(self, proto: Any) -> None:
        transport = proto._transport
        transport.pause_reading()
        fd = transport.get_extra_info("socket").fileno()
        counter = FrameCounter()
        # Bytes the subscriber holds unparsed belong to the next frame.
        left = proto.unparsed()
        if left:
            counter.feed(left)
        self._counters[fd] = counter
        self._epoll.register(fd, select.EPOLLIN)

    def run(self) -> int:
        """Read every socket with bytes waiting; returns the frames counted."""
        view = memoryview(self._buffer)
        frames = 0
        for fd, _ in self._epoll.poll(0):
            counter = self._counters[fd]
            while True:
                try:
                    n = os.readv(fd, [self._buffer])
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    n = 0
                if n == 0:  # closed by the node
                    self._epoll.unregister(fd)
                    self.closed += 1
                    break
                frames += counter.feed(view[:n])
                if n < len(self._buffer):
                    break
        if frames:
            self.received.append((time.time() * 1000, frames))
        return frames


def _abort(transport: Any) -> None:
    """Close with a reset: no TIME_WAIT keeps the source port after the run (a re-run within
    a minute would otherwise find its source addresses' ports taken, see ``_raw_fleet``)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _raw_fleet(subs: list[tuple[Any, ...]], ready: Any, stop: Any) -> dict[str, Any]:
    """One ``RawSubscriber`` socket per entry (ws url, source address or None, path, args,
    sampled): a sampled socket parses and timestamps every push; the others drain (see
    :class:`_Drain`) once subscribed.

    The source address spreads the fleet over several 127.0.0.x: ``bind()`` to a port-0
    address takes its ports from that address's half of ``ip_local_port_range`` (Linux keeps
    the other half for ``connect()``), ~14,000 with the default range, and past it every bind
    searches the whole range (measured here: 30 µs up to 12,000 ports bound, 9-33 ms at
    15,000-18,000). A socket that fails (a refused handshake, a lost connection, no first
    Transition in time) is counted by reason, not fatal to the fleet.
    """
    from websockets.uri import parse_uri

    from marketpulse.reactive.admission import raise_fd_limit
    from marketpulse.reactive.sync.client import RawSubscriber

    raise_fd_limit()
    loop = asyncio.get_running_loop()
    samples: list[Sample] = []
    measuring = False
    failed = 0
    failures: dict[str, int] = {}
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    drain = _Drain()
    started, started_cpu = time.monotonic(), time.process_time()

    async def start(
        url: str, source: str | None, path: str, args: dict[str, Any], sampled: bool = True
    ) -> tuple[Any, bool] | None:
        nonlocal failed
        last: dict[int, Any] = {}

        def on_transition(message: dict[str, Any], received_ns: int) -> None:
            nonlocal failed
            failed += _record(message, last, received_ns / 1e6, samples if measuring else None)

        uri = parse_uri(url)
        async with gate:
            try:
                _, proto = await loop.create_connection(
                    lambda: RawSubscriber(url, path, args, on_transition),
                    uri.host,
                    uri.port,
                    local_addr=(source, 0) if source else None,
                )
                await asyncio.wait_for(proto.subscribed, 120)
            except Exception as exc:  # counted: the figures say how many and why
                reason = str(exc) or type(exc).__name__
                reason = reason.split(" {", 1)[0][:120]
                failures[reason] = failures.get(reason, 0) + 1
                return None
        if not sampled:
            drain.add(proto)
        return proto, sampled

    live = [p for p in await asyncio.gather(*(start(*sub) for sub in subs)) if p is not None]
    connect_s, connect_cpu_s = time.monotonic() - started, time.process_time() - started_cpu
    measuring = True
    _quiet_gc()
    ready.set()
    next_drain = time.monotonic()
    while not stop.is_set():
        if time.monotonic() >= next_drain:
            drain.run()
            next_drain += DRAIN_INTERVAL_S
        await asyncio.sleep(0.05)
    drain.run()
    dropped = drain.closed + sum(
        p.failure is not None or p._transport.is_closing() for p, sampled in live if sampled
    )
    for proto, _ in live:
        _abort(proto._transport)
    return {
        "samples": samples,
        "received": drain.received,
        "dropped": dropped,
        "errors": failed,
        "failures": failures,
        "connect_s": connect_s,
        "connect_cpu_s": connect_cpu_s,
    }


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


def _exit_with_parent() -> None:
    """End this child when the benchmark that started it dies.

    A benchmark killed outright (SIGKILL, a timeout) never sets ``stop``, and its children
    would stay subscribed: to Redis, they then receive every later run's publishes and load
    the host those runs measure (seen: two such children doubled Redis's p50 at 10,000
    msgs/s in the next runs).
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _child(kind: str, url: str, subs: list[Any], ready: Any, stop: Any, out: Any) -> None:
    _exit_with_parent()
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
            None, query path, args, sampled: parse and timestamp every push, or only count
            them once subscribed); ``url`` unused) or ``redis`` (``subs`` = per client a
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
    received: list[tuple[float, int]] = field(default_factory=list)
    """``raw``: (epoch ms, pushes) counted on the draining sockets."""
    dropped: int = 0
    errors: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    """``raw``: sockets that never subscribed, by reason."""
    connect_s: float = 0.0
    """``raw``: the slowest child's time to connect and subscribe all its sockets."""
    connect_cpu_s: float = 0.0
    """``raw``: the CPU time the children spent connecting and subscribing."""
    _procs: list[Any] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        """The child processes' ids (for their CPU time)."""
        return [p.pid for p in self._procs]

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
                self.received += result.get("received", [])
                self.dropped += result["dropped"]
                self.errors += result["errors"]
                for reason, count in result.get("failures", {}).items():
                    self.failures[reason] = self.failures.get(reason, 0) + count
                self.connect_s = max(self.connect_s, result.get("connect_s", 0.0))
                self.connect_cpu_s += result.get("connect_cpu_s", 0.0)
        finally:
            self._kill()

    def between(self, start_ms: float, end_ms: float) -> list[float]:
        """Latencies of the samples received in [start_ms, end_ms)."""
        return [lat for at, lat in self.samples if start_ms <= at < end_ms]
