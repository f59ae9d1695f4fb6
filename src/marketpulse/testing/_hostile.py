"""Hostile clients against a real ``marketpulse serve``, with a well-behaved bystander timed.

Every attack of issue 16's table is a coroutine here, run in its own process from another
loopback address (127.0.0.2, so per-address caps tell attacker from bystander), while a :class:`Bystander` (the
official PyPI ``convex`` client in its own process) is pushed a stamp a writer commits 20 times
a second. :func:`run_attack` returns the bystander's latencies during the attack and the
server's memory before, at peak and after. tests/e2e/test_hostile_clients.py asserts bounds on
them; bench/hostile.py prints them against a quiet baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import queue
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from marketpulse._components import StoreProcess
from marketpulse._process import marketpulse_env
from marketpulse.reactive.values import decode_ts

__all__ = [
    "ATTACKER",
    "ATTACKS",
    "HOSTILE_FUNCTIONS",
    "Bystander",
    "LowFdStore",
    "rss_kib",
    "run_attack",
]

HOSTILE_FUNCTIONS = "marketpulse.testing._hostile_app"
ATTACKER = "127.0.0.2"
"""The attackers' source address: the bystander and writer use 127.0.0.1."""


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class LowFdStore(StoreProcess):
    """``marketpulse serve`` started under ``prlimit``: soft and hard descriptor limit
    ``fd_limit``, so it cannot raise its own.

    Args:
        *args: As :class:`StoreProcess`.
        fd_limit: The descriptor limit.
        **kwargs: As :class:`StoreProcess`.
    """

    def __init__(self, *args: Any, fd_limit: int = 1024, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fd_limit = fd_limit

    def argv(self) -> list[str]:
        return ["prlimit", f"--nofile={self.fd_limit}:{self.fd_limit}", "--", *super().argv()]


class Bystander:
    """The official Python client subscribed to a stamp, and a writer committing stamps.

    Args:
        url: The store's URL.
        rate: Stamps per second.
    """

    def __init__(self, url: str, rate: float = 20.0) -> None:
        self.url = url
        self.rate = rate
        self.name = "bystander"
        self.samples: list[tuple[float, float]] = []  # (receipt epoch ms, latency ms)
        self.errors: list[str] = []
        self.write_failures = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Bystander:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "marketpulse.testing._bystander", self.url, self.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**__import__("os").environ, **marketpulse_env()},
        )
        ready = threading.Event()
        self._threads = [
            threading.Thread(target=self._read, args=(ready,), daemon=True),
            threading.Thread(target=self._write, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if not ready.wait(30):
            self.__exit__()
            raise RuntimeError("the bystander did not get its first push")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(10)
            if self._proc.poll() is None:
                self._proc.kill()

    def _read(self, ready: threading.Event) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            record = json.loads(line)
            if "error" in record:
                self.errors.append(record["error"])
            elif record.get("v"):
                self.samples.append((record["at"], record["at"] - float(record["v"])))
                ready.set()

    def _write(self) -> None:
        period = 1.0 / self.rate
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    r = http.post(
                        "/api/mutation",
                        json={
                            "path": "hostile:stamp",
                            "args": {"name": self.name, "at": time.time() * 1000.0},
                        },
                    )
                    if r.status_code != 200 or r.json().get("status") != "success":
                        self.write_failures += 1
                except httpx.HTTPError:
                    self.write_failures += 1
                self._stop.wait(max(0.0, period - (time.monotonic() - started)))

    def latencies_between(self, start_ms: float, end_ms: float) -> list[float]:
        """Push latencies (ms) of the stamps received in ``[start_ms, end_ms]`` (epoch ms)."""
        return [lat for at, lat in list(self.samples) if start_ms <= at <= end_ms]


@dataclass
class AttackResult:
    """What one attack did to everyone else."""

    name: str
    latencies_ms: list[float]
    rss_before_kib: int
    rss_peak_kib: int
    rss_after_kib: int
    details: dict[str, Any] = field(default_factory=dict)


Attack = Callable[[str, int, float], Coroutine[Any, Any, dict[str, Any]]]
"""(host, port, scale) → details; scale 1.0 is the issue's size, tests run smaller."""


async def _open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port, local_addr=(ATTACKER, 0))


_UPGRADE = (
    b"GET /api/sync HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


def _frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    head = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        header = bytes((head, 0x80 | size))
    elif size < 65536:
        header = struct.pack("!BBH", head, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", head, 0x80 | 127, size)
    return header + b"\0\0\0\0" + payload


async def _socket(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await _open(host, port)
    writer.write(_UPGRADE)
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    writer.write(_frame(0x1, orjson.dumps({"type": "Connect", "sessionId": "attacker"})))
    return reader, writer


async def _drain(reader: asyncio.StreamReader, timeout: float) -> bytes:
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
    return data


async def _until_closed(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Whether the server closed the connection within ``timeout`` (what it sent is dropped)."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def _close(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.transport.abort()


async def big_query_set(host: str, port: int, scale: float) -> dict[str, Any]:
    """One ModifyQuerySet adding 75,000 distinct subscriptions (refused), then one at the cap."""
    reader, writer = await _socket(host, port)
    n = int(75_000 * scale)
    mods = [
        {"type": "Add", "queryId": i, "udfPath": "hostile:latest", "args": [{"name": f"q{i}"}]}
        for i in range(n)
    ]
    message = {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": mods}
    writer.write(_frame(0x1, orjson.dumps(message)))
    refused = await _drain(reader, 10)
    writer.transport.abort()
    # At the cap: accepted, run in slices; then the socket goes and its memory with it.
    reader, writer = await _socket(host, port)
    message["modifications"] = mods[:2000]
    writer.write(_frame(0x1, orjson.dumps(message)))
    await writer.drain()
    answer = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            while b"Transition" not in answer:
                answer += await reader.read(65536)
    writer.transport.abort()
    return {
        "over_cap_refused": b"TooManyQueries" in refused or b"MessageTooLarge" in refused,
        "at_cap_answered": b"Transition" in answer,
    }


async def idle_connections(host: str, port: int, scale: float) -> dict[str, Any]:
    """1,100 idle TCP connections; answers (503) and drops count as refused."""
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    for _ in range(int(1100 * scale)):
        try:
            reader, writer = await _open(host, port)
        except OSError:
            continue
        readers.append(reader)
        writers.append(writer)
    await asyncio.sleep(1.0)
    # Refused ones were answered 503 and closed at once.
    refused = sum(r.at_eof() or bool(r._buffer) for r in readers)  # type: ignore[attr-defined, misc]
    await asyncio.sleep(2.0)
    await _close(writers)
    return {"opened": len(writers), "refused": refused}


async def half_open(host: str, port: int, scale: float) -> dict[str, Any]:
    """Idle, partial head, partial handshake, slow body, silent after upgrade: all closed?"""
    kinds: dict[str, bytes] = {
        "idle": b"",
        "partial_head": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        "partial_handshake": _UPGRADE[:60],
        "slow_body": b"POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{",
        "silent_after_upgrade": _UPGRADE,
    }
    per_kind = max(1, int(1000 * scale))
    opened: list[tuple[str, asyncio.StreamReader, asyncio.StreamWriter]] = []
    for kind, data in kinds.items():
        for _ in range(per_kind):
            try:
                reader, writer = await _open(host, port)
            except OSError:
                continue
            if data:
                writer.write(data)
            opened.append((kind, reader, writer))
    closed = await asyncio.gather(*(_until_closed(r, 60) for _, r, _w in opened))
    still_open = closed.count(False)
    await _close([w for _, _, w in opened])
    return {"opened": len(opened), "still_open": still_open}


async def tiny_fragments(host: str, port: int, scale: float) -> dict[str, Any]:
    """One message as 8 million 1-byte fragments (56 MB on the wire), read as it goes."""
    reader, writer = await _socket(host, port)
    # Reading while sending, as a client would: the FatalError must arrive although the client
    # goes on sending past the refusal (the server drains a bounded amount, then closes).
    answer = asyncio.ensure_future(_drain(reader, 60))
    writer.write(_frame(0x1, b"{", fin=False))
    chunk = _frame(0x0, b" ", fin=False) * 10_000
    sent = 0
    total = int(800 * scale) * 10_000
    try:
        for _ in range(total // 10_000):
            writer.write(chunk)
            await writer.drain()
            sent += 10_000
    except ConnectionError:
        pass
    await asyncio.wait({answer}, timeout=5)
    writer.transport.abort()
    received = await answer
    return {
        "fragments_sent": sent,
        "refused": b"TooManyFragments" in received or sent < total,
        "error_received": b"TooManyFragments" in received,
    }


async def unfinished_frames(host: str, port: int, scale: float) -> dict[str, Any]:
    """40 connections each holding an unfinished 15 MiB frame."""
    writers = []
    readers = []
    cut = 0  # connected, then cut off by the server while still sending (its refusal, abrupt)
    size = 15 * 1024 * 1024
    for _ in range(int(40 * scale) or 1):
        try:
            reader, writer = await _socket(host, port)
        except (ConnectionError, OSError):
            continue
        try:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, size) + b"\0\0\0\0"
            writer.write(header + b"x" * (size - 1024))
            await writer.drain()
        except (ConnectionError, OSError):
            cut += 1
            writer.transport.abort()
            continue
        readers.append(reader)
        writers.append(writer)
    answers = [await _drain(r, 0.5) for r in readers]
    await _close(writers)
    return {
        "connections": len(writers),
        "refused": sum(b"Overloaded" in a or b"MessageTimeout" in a for a in answers),
        "cut": cut,
    }


async def utf8_message(host: str, port: int, scale: float) -> dict[str, Any]:
    """A 15 MiB message of 4-byte UTF-8 characters (under 8 Mi characters)."""
    reader, writer = await _socket(host, port)
    chars = int(15 * 1024 * 1024 / 4 * scale)
    payload = ('{"type":"Event","x":"' + "\U0001f600" * chars + '"}').encode()
    writer.write(_frame(0x1, payload))
    answer = await _drain(reader, 5)
    writer.transport.abort()
    return {"bytes": len(payload), "refused": b"MessageTooLarge" in answer}


async def big_bodies(host: str, port: int, scale: float) -> dict[str, Any]:
    """Five 100 MB HTTP bodies in parallel."""
    size = int(100_000_000 * scale)

    async def one() -> bytes:
        reader, writer = await _open(host, port)
        writer.write(
            f"POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        block = b" " * 1_000_000
        writer.write(block)
        answer = b""
        with contextlib.suppress(ConnectionError):
            for _ in range(size // len(block)):
                # Read what the server says as we go: its answer comes before the body ends.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.01):
                        answer += await reader.read(65536)
                if answer:
                    break
                writer.write(block)
                await writer.drain()
        answer += await _drain(reader, 2)
        writer.transport.abort()
        return answer

    answers = await asyncio.gather(*(one() for _ in range(5)))
    return {"refused_413": sum(a.startswith(b"HTTP/1.1 413") for a in answers)}


async def huge_batch(host: str, port: int, scale: float) -> dict[str, Any]:
    """``/api/query_batch`` with 100,000 queries."""
    queries = [{"path": "hostile:latest", "args": {"name": "b"}}] * int(100_000 * scale)
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=ATTACKER)) as c:
        r = await c.post(f"http://{host}:{port}/api/query_batch", json={"queries": queries})
    return {"status": r.status_code, "code": r.json().get("code")}


async def deep_nesting(host: str, port: int, scale: float) -> dict[str, Any]:
    """Arguments nested 600-1,000 deep, over and over (each was a traceback in the log)."""
    refused = 0
    for i in range(int(50 * scale) or 1):
        reader, writer = await _socket(host, port)
        depth = 600 + (i * 37) % 400
        args = "[" * depth + "]" * depth
        writer.write(
            _frame(
                0x1,
                (
                    '{"type":"Mutation","requestId":1,"udfPath":"hostile:stamp","args":['
                    + args
                    + "]}"
                ).encode(),
            )
        )
        refused += b"JsonTooDeep" in await _drain(reader, 2)
        writer.transport.abort()
    return {"refused": refused}


async def slow_queries(host: str, port: int, scale: float) -> dict[str, Any]:
    """20 slow public queries at once (each under the 1 s limit), and /health meanwhile."""
    transport = httpx.AsyncHTTPTransport(local_address=ATTACKER)
    async with httpx.AsyncClient(transport=transport, timeout=120) as c:
        url = f"http://{host}:{port}"
        tasks = [
            asyncio.create_task(
                c.post(url + "/api/query", json={"path": "hostile:slow", "args": {"seconds": 0.3}})
            )
            for _ in range(int(20 * scale) or 1)
        ]
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(timeout=60) as h:
            started = time.monotonic()
            await h.get(url + "/health")
            health_s = time.monotonic() - started
        results = await asyncio.gather(*tasks)
    return {"health_s": round(health_s, 3), "answered": sum(r.status_code == 200 for r in results)}


async def _read_message(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The next (unfragmented, unmasked) text message from the server; pings are skipped."""
    while True:
        head = await reader.readexactly(2)
        size = head[1] & 0x7F
        if size == 126:
            size = struct.unpack("!H", await reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await reader.readexactly(8))[0]
        payload = await reader.readexactly(size)
        if head[0] & 0x0F == 0x1:
            message: dict[str, Any] = orjson.loads(payload)
            return message


async def slow_subscription(host: str, port: int, scale: float) -> dict[str, Any]:
    """A subscription to a 0.25 s query of a stamp the client itself writes, again and again:
    every commit of the stamp re-runs it (off the loop: inline, each held everyone 0.25 s)."""
    reader, writer = await _socket(host, port)
    # A short first run teaches the server the function is slow; the long one runs off the loop.
    adds = [
        {"type": "Add", "queryId": q, "udfPath": "hostile:slow_latest",
         "args": [{"name": "attacker", "seconds": seconds}]}
        for q, seconds in ((0, 0.01), (1, 0.25))
    ]  # fmt: skip
    for version, add in enumerate(adds):
        message = {"type": "ModifyQuerySet", "baseVersion": version, "newVersion": version + 1,
                   "modifications": [add]}  # fmt: skip
        writer.write(_frame(0x1, orjson.dumps(message)))
    seen: dict[int, float] = {}
    tss: list[int] = []
    mixed = 0
    updates = 0

    async def until(stamp: float) -> None:
        # Both queries read the same stamp: a Transition showing them at different stamps mixes
        # two commits.
        nonlocal mixed, updates
        while seen.get(0) != stamp or seen.get(1) != stamp:
            message = await _read_message(reader)
            if message.get("type") == "FatalError":
                raise RuntimeError(message)
            if message.get("type") != "Transition":
                continue
            tss.append(decode_ts(message["endVersion"]["ts"]))
            for mod in message["modifications"]:
                if mod.get("type") == "QueryUpdated":
                    seen[mod["queryId"]] = mod["value"][0]
                    updates += mod["queryId"] == 1
            mixed += seen.get(0) != seen.get(1) and len(seen) == 2

    rounds = max(3, int(20 * scale))
    try:
        async with asyncio.timeout(60):
            await until(0.0)
            for i in range(1, rounds + 1):
                mutation = {"type": "Mutation", "requestId": i, "udfPath": "hostile:stamp",
                            "args": [{"name": "attacker", "at": float(i)}]}  # fmt: skip
                writer.write(_frame(0x1, orjson.dumps(mutation)))
                await until(float(i))
    finally:
        writer.transport.abort()
    return {
        "rounds": rounds,
        "updates": updates,
        "mixed": mixed,
        "ts_in_order": tss == sorted(tss),
    }


async def session_reuse(host: str, port: int, scale: float) -> dict[str, Any]:
    """Another session's sessionId with the same requestId."""
    outcomes = []
    for path, args in (
        ("hostile:stamp", {"name": "v", "at": 1.0}),
        ("hostile:stamp", {"name": "x", "at": 2.0}),
    ):
        reader, writer = await _open(host, port)
        writer.write(_UPGRADE)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_frame(0x1, orjson.dumps({"type": "Connect", "sessionId": "victim"})))
        writer.write(
            _frame(
                0x1,
                orjson.dumps({"type": "Mutation", "requestId": 9, "udfPath": path, "args": [args]}),
            )
        )
        data = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while b"MutationResponse" not in data:
                    data += await reader.read(65536)
        outcomes.append(data)
        writer.transport.abort()
    return {
        "first_succeeded": b'"success":true' in outcomes[0],
        "second_rejected": b"MutationReplayRejected" in outcomes[1],
    }


async def hostile_origins(host: str, port: int, scale: float) -> dict[str, Any]:
    """``Origin: null`` and a foreign origin, on the API and on /metrics."""
    transport = httpx.AsyncHTTPTransport(local_address=ATTACKER)
    leaked = 0
    async with httpx.AsyncClient(transport=transport) as c:
        for origin in ("null", "https://evil.example.test"):
            for path in ("/health", "/metrics"):
                r = await c.get(f"http://{host}:{port}{path}", headers={"Origin": origin})
                leaked += "access-control-allow-origin" in r.headers
                leaked += "access-control-allow-credentials" in r.headers
    return {"cors_headers_leaked": leaked}


ATTACKS: dict[str, Attack] = {
    "big_query_set": big_query_set,
    "idle_connections": idle_connections,
    "half_open": half_open,
    "tiny_fragments": tiny_fragments,
    "unfinished_frames": unfinished_frames,
    "utf8_message": utf8_message,
    "big_bodies": big_bodies,
    "huge_batch": huge_batch,
    "deep_nesting": deep_nesting,
    "slow_queries": slow_queries,
    "slow_subscription": slow_subscription,
    "session_reuse": session_reuse,
    "hostile_origins": hostile_origins,
}
"""Issue 16's table, row by row."""


def _attack_process(
    name: str, host: str, port: int, scale: float, answers: multiprocessing.Queue[Any]
) -> None:
    try:
        answers.put(asyncio.run(ATTACKS[name](host, port, scale)))
    except Exception as exc:
        answers.put({"error": repr(exc)})


def run_attack(
    pid: int, url: str, bystander: Bystander, name: str, scale: float = 1.0, settle_s: float = 3.0
) -> AttackResult:
    """Run one attack from :data:`ATTACKER` while sampling the server's memory.

    Args:
        pid: The server's pid.
        url: The server's URL.
        bystander: Already running.
        name: A key of :data:`ATTACKS`.
        scale: 1.0 for the issue's sizes.
        settle_s: How long after the attack "after" is measured.
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    before = rss_kib(pid)
    peak = before
    # The attacker is another process, as another client would be: in a thread it shared the
    # GIL with the bystander's stamp writer here, and building a 6 MB message delayed stamps
    # by tens of ms that were then counted as the server's latency.
    spawn = multiprocessing.get_context("spawn")
    answers = spawn.Queue()
    attacker = spawn.Process(
        target=_attack_process, args=(name, host, int(port), scale, answers), daemon=True
    )
    start_ms = time.time() * 1000.0
    attacker.start()
    details: dict[str, Any] | None = None
    while details is None:
        try:
            details = answers.get(timeout=0.05)
        except queue.Empty:
            if not attacker.is_alive() and answers.empty():
                details = {"error": f"the attacker process exited with {attacker.exitcode}"}
        peak = max(peak, rss_kib(pid))
    attacker.join(10)
    # "During" runs until the settle time is over too: a short attack's effects (a queue it
    # left behind, memory being released) show after its last byte.
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        peak = max(peak, rss_kib(pid))
        time.sleep(0.05)
    end_ms = time.time() * 1000.0
    return AttackResult(
        name,
        bystander.latencies_between(start_ms, end_ms),
        before,
        peak,
        rss_kib(pid),
        details,
    )
