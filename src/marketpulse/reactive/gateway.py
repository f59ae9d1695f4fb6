"""What the WebSocket and HTTP front doors share: the engine seam, callers, limits, metrics.

The engine seam is docs/interfaces.md §2; :class:`EngineAPI` states the part of it the front
doors use, so they can be tested against any engine that keeps that contract.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from marketpulse.reactive.access import Access, Caller
from marketpulse.reactive.limits import ConnectionLimits

if TYPE_CHECKING:
    # Types only: the front doors run against any engine that keeps the seam.
    from marketpulse.reactive.engine import QueryListener

__all__ = [
    "ConnectionWatchdog",
    "EngineAPI",
    "Flusher",
    "Gateway",
    "Metrics",
    "MutationLog",
]

log = structlog.get_logger("marketpulse.gateway")


class EngineAPI(Protocol):
    """The engine as the front doors use it (docs/interfaces.md §2)."""

    @property
    def ts(self) -> int: ...
    def run_query(self, path: str, args: dict[str, Any], identity: Any) -> Any: ...
    async def run_mutation(self, path: str, args: dict[str, Any], identity: Any) -> Any: ...
    async def run_action(self, path: str, args: dict[str, Any], identity: Any) -> Any: ...
    def subscribe(
        self,
        path: str,
        args: dict[str, Any],
        identity: Any,
        listener: QueryListener,
        *,
        journal: str | None = None,
    ) -> Any: ...
    def unsubscribe(self, query: Any, listener: QueryListener) -> None: ...


class Metrics:
    """Prometheus metrics of one server (own registry, so several apps can share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge(
            "marketpulse_sync_connections", "Open sync WebSockets", registry=self.registry
        )
        self.subscriptions = Gauge(
            "marketpulse_sync_subscriptions",
            "Queries subscribed over WebSockets",
            registry=self.registry,
        )
        self.transitions = Counter(
            "marketpulse_sync_transitions", "Transitions pushed to clients", registry=self.registry
        )
        self.dropped = Counter(
            "marketpulse_sync_dropped_clients",
            "Clients dropped for not reading",
            registry=self.registry,
        )
        self.fanout = Histogram(
            "marketpulse_sync_fanout_seconds",
            "Time to write one commit's Transitions to every idle socket (direct writes)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
            registry=self.registry,
        )
        self.fanout_cpu = Counter(
            "marketpulse_sync_fanout_cpu_seconds",
            "CPU time spent in direct fan-out writes (independent of CPU contention)",
            registry=self.registry,
        )
        self.commits = Counter(
            "marketpulse_mutations_committed",
            "Mutations committed through this server",
            registry=self.registry,
        )

    def watch_engine(self, engine: Any) -> None:
        """Export the engine's commit-path timings (``Engine.timings``), if it keeps them."""
        if hasattr(engine, "timings"):
            self.registry.register(_CommitTimingsCollector(engine))


class _CommitTimingsCollector(Collector):
    """Reads ``Engine.timings`` at scrape time: the engine itself stays free of Prometheus."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def collect(self) -> Any:
        t = self._engine.timings
        stages = CounterMetricFamily(
            "marketpulse_commit_stage_seconds",
            "Wall time of the commit path by stage, summed (execute, write, apply, rerun)",
            labels=["stage"],
        )
        for stage in ("execute", "write", "apply", "rerun"):
            stages.add_metric([stage], getattr(t, stage))
        yield stages
        yield CounterMetricFamily(
            "marketpulse_commit_groups",
            "Groups of commits written (one durable write each)",
            t.groups,
        )


@dataclass
class _Logged:
    at: float
    outcome: asyncio.Future[tuple[Any, int | None]]


class MutationLog:
    """(sessionId, requestId) → outcome, so a JS client's re-sent mutation runs only once.

    Bounded in size and age; an entry holds the in-flight future, so a re-send that arrives
    while the first run is still executing waits for it instead of running again.
    """

    def __init__(self, max_entries: int = 10_000, max_age_s: float = 600.0) -> None:
        self._entries: OrderedDict[tuple[str, int], _Logged] = OrderedDict()
        self._max_entries = max_entries
        self._max_age_s = max_age_s

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, int]) -> asyncio.Future[tuple[Any, int | None]] | None:
        self._expire()
        entry = self._entries.get(key)
        return entry.outcome if entry else None

    def put(self, key: tuple[str, int], outcome: asyncio.Future[tuple[Any, int | None]]) -> None:
        self._entries[key] = _Logged(time.monotonic(), outcome)
        self._entries.move_to_end(key)
        self._expire()

    def _expire(self) -> None:
        horizon = time.monotonic() - self._max_age_s
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if len(self._entries) <= self._max_entries and entry.at >= horizon:
                break
            del self._entries[key]


class _Tickable(Protocol):
    def tick(self, now: float) -> None: ...


class ConnectionWatchdog:
    """One periodic task ticking every connection (no timer per socket): Pings, stuck-write drops.

    Not the engine's deadline watchdog, which interrupts function runs that overrun their time.
    """

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._members: set[_Tickable] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, member: _Tickable) -> None:
        self._members.add(member)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, member: _Tickable) -> None:
        self._members.discard(member)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._members:
            await asyncio.sleep(self._interval_s)
            now = loop.time()
            for member in list(self._members):
                try:
                    member.tick(now)
                except Exception:  # one bad socket must not stop the others' keepalives
                    log.exception("watchdog tick failed")


class _Flushable(Protocol):
    def flush_now(self, now: float, shared: dict[Any, bytes] | None = None) -> None: ...


class Flusher:
    """Fan-out without a task switch per socket.

    After a commit the engine notifies every affected subscriber synchronously; each affected
    socket registers here and ONE callback, run as soon as the commit step returns, writes each
    one's Transition directly (the only way Transitions for commits go out). A socket whose
    transport is paused or whose mutation is running only notes that it is stale and sends
    the latest state when it can.
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._dirty: dict[_Flushable, None] = {}
        self._scheduled = False
        self._metrics = metrics

    def add(self, member: _Flushable) -> None:
        self._dirty[member] = None
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, {}
        start = time.perf_counter()
        start_cpu = time.thread_time()
        now = asyncio.get_running_loop().time()
        shared: dict[Any, bytes] = {}  # identical Transitions encoded once per fan-out
        for member in dirty:
            try:
                member.flush_now(now, shared)
            except Exception:  # one socket's failure must not starve the rest
                log.exception("direct transition write failed")
        if self._metrics is not None:
            self._metrics.fanout.observe(time.perf_counter() - start)
            self._metrics.fanout_cpu.inc(time.thread_time() - start_cpu)


@dataclass
class Gateway:
    """Everything a front door needs to serve one engine."""

    engine: EngineAPI
    auth: Access
    identity_of: Callable[[Caller], Any]
    function_kind: Callable[[str], str | None]
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    metrics: Metrics = field(default_factory=Metrics)
    mutation_log: MutationLog = field(default_factory=MutationLog)
    watchdog: ConnectionWatchdog = field(init=False)
    flusher: Flusher = field(init=False)

    def __post_init__(self) -> None:
        limits = self.limits
        self.metrics.watch_engine(self.engine)
        self.flusher = Flusher(self.metrics)
        self.watchdog = ConnectionWatchdog(
            min(1.0, limits.client_send_timeout_s / 4, limits.ping_interval_s / 4)
        )
