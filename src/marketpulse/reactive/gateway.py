"""What the WebSocket and HTTP front doors share: the engine seam, callers, limits, metrics.

The engine seam is docs/interfaces.md §2; :class:`EngineAPI` states the part of it the front
doors use, so they can be tested against any engine that keeps that contract.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from marketpulse._aio import call_after_waiting, yield_to_waiting
from marketpulse.reactive.access import Access, Caller
from marketpulse.reactive.admission import Admission
from marketpulse.reactive.limits import ConnectionLimits
from marketpulse.reactive.sync._fanout_writer import FanoutWriter, fanout_writer_from_env
from marketpulse.reactive.sync.protocol import SharedTransitions

if TYPE_CHECKING:
    # Types only: the front doors run against any engine that keeps the seam.
    from marketpulse.reactive.engine import QueryListener

__all__ = [
    "ConnectionWatchdog",
    "EngineAPI",
    "Flusher",
    "Gateway",
    "MemoryReturner",
    "Metrics",
    "MutationLog",
    "OriginPolicy",
    "PartialBudget",
    "QueryShare",
    "ReplayRejected",
]

log = structlog.get_logger("marketpulse.gateway")


class EngineAPI(Protocol):
    """The engine as the front doors use it (docs/interfaces.md §2)."""

    @property
    def ts(self) -> int: ...
    def run_query(self, path: str, args: dict[str, Any], identity: Any) -> Any: ...
    async def run_queries(
        self, calls: Sequence[tuple[str, Any]], identity: Any
    ) -> tuple[list[Any], float]: ...
    async def run_mutation(
        self,
        path: str,
        args: dict[str, Any],
        identity: Any,
        *,
        request: tuple[str, int, bytes] | None = None,
    ) -> Any: ...
    def start_mutation(
        self,
        path: str,
        args: dict[str, Any],
        identity: Any,
        *,
        request: tuple[str, int, bytes] | None = None,
    ) -> asyncio.Future[Any]: ...
    def sharing_slice(self, ends: float) -> AbstractContextManager[None]: ...
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
    def runs_off_loop(self, path: str) -> bool: ...
    async def subscribe_async(
        self,
        path: str,
        args: dict[str, Any],
        identity: Any,
        listener: QueryListener,
        *,
        journal: str | None = None,
    ) -> tuple[Any, float]: ...


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
            "Time of one fan-out turn: Transitions written to idle sockets for at most a work "
            "slice (a wide fan-out takes several)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
            registry=self.registry,
        )
        self.mutation_wait = Histogram(
            "marketpulse_sync_mutation_wait_seconds",
            "WebSocket mutations: from the read of the bytes that completed one to the engine "
            "starting it (frame and message parsing, dispatch, and the wait behind the "
            "socket's earlier mutations)",
            buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 1.0),
            registry=self.registry,
        )
        self.fanout_cpu = Counter(
            "marketpulse_sync_fanout_cpu_seconds",
            "CPU time spent in direct fan-out writes, helper threads included (independent of "
            "CPU contention)",
            registry=self.registry,
        )
        self.fanout_threaded = Counter(
            "marketpulse_sync_fanout_threaded",
            "Fan-outs whose socket writes were spread over the loop's and helper threads",
            registry=self.registry,
        )
        self.commits = Counter(
            "marketpulse_mutations_committed",
            "Mutations committed through this server",
            registry=self.registry,
        )
        self.refused = Counter(
            "marketpulse_refused",
            "Connections, messages and requests refused by a limit, by reason",
            labelnames=["reason"],
            registry=self.registry,
        )

    def watch_engine(self, engine: Any) -> None:
        """Export the engine's commit-path timings (``Engine.timings``), if it keeps them."""
        if hasattr(engine, "timings"):
            self.registry.register(_CommitTimingsCollector(engine))
        if hasattr(engine, "readiness"):
            self.registry.register(_ReadinessCollector(engine))


class _ReadinessCollector(Collector):
    """A node's lag behind a shared log and its readiness, read at scrape time (nothing
    for a store that is not a shared log)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def collect(self) -> Any:
        ready = self._engine.readiness()
        if ready is None:
            return
        yield GaugeMetricFamily(
            "marketpulse_store_lag_seconds",
            "How long this node has known of commits of the shared log it has not applied",
            ready.lag_s,
        )
        yield GaugeMetricFamily(
            "marketpulse_store_ready",
            "1 when this node is connected, following the log and within its lag limit",
            1.0 if ready.ok else 0.0,
        )


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
            "Groups of commits applied (durable ones after their write, relaxed ones before)",
            t.groups,
        )
        yield CounterMetricFamily(
            "marketpulse_commit_reruns_deferred",
            "Query re-runs a commit left to a later loop turn (its slice of the turn was used)",
            t.deferred,
        )
        yield CounterMetricFamily(
            "marketpulse_commit_conflicts",
            "Groups the shared log refused (another node first): their mutations ran again",
            t.conflicts,
        )
        yield GaugeMetricFamily(
            "marketpulse_unflushed_commits",
            "Relaxed-durability commits answered but not yet written (a crash would lose them)",
            getattr(self._engine, "unflushed", 0),
        )


@dataclass
class _Logged:
    at: float
    caller: Hashable
    outcome: asyncio.Future[Any]


class ReplayRejected(Exception):
    """A (sessionId, requestId) already names another caller's call: refuse, don't replay."""


class MutationLog:
    """(sessionId, requestId) → outcome, so a JS client's re-sent mutation runs only once.

    Bounded in size and age; an entry holds the in-flight future, so a re-send that arrives
    while the first run is still executing waits for it instead of running again. An entry is
    bound to its call (who called, which function, with what arguments): a re-send is that same
    call, anything else under the same ids is refused (:class:`ReplayRejected`) and leaves the
    entry alone, so nobody gets another's result or plants one.
    """

    def __init__(self, max_entries: int = 10_000, max_age_s: float = 600.0) -> None:
        self._entries: OrderedDict[tuple[str, int], _Logged] = OrderedDict()
        self._max_entries = max_entries
        self._max_age_s = max_age_s

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, int], caller: Hashable) -> asyncio.Future[Any] | None:
        """The outcome logged under ``key`` for this same call, or None if there is none.

        Raises:
            ReplayRejected: ``key`` is logged for a different call.
        """
        self._expire()
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.caller != caller:
            raise ReplayRejected(
                "MutationReplayRejected: this sessionId and requestId belong to another call"
            )
        return entry.outcome

    def put(
        self,
        key: tuple[str, int],
        caller: Hashable,
        outcome: asyncio.Future[Any],
    ) -> None:
        """Log ``outcome`` as the call ``caller`` made under ``key``."""
        self._entries[key] = _Logged(time.monotonic(), caller, outcome)
        self._entries.move_to_end(key)
        self._expire()

    def _expire(self) -> None:
        horizon = time.monotonic() - self._max_age_s
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if len(self._entries) <= self._max_entries and entry.at >= horizon:
                break
            del self._entries[key]


class QueryShare:
    """Fair query time between client addresses: a token bucket of run time per address.

    Every query run (HTTP, or a socket's first runs) is charged to its client's address; an
    address that has used more than its share waits (its requests are delayed, nobody else's
    are), so one client's many or slow queries cannot take the event loop from the others.

    Args:
        share_s: seconds of run time per second each address earns (0: no limit).
        burst_s: the most an address can bank.
    """

    def __init__(self, share_s: float, burst_s: float) -> None:
        self._share = share_s
        self._burst = max(burst_s, share_s)
        self._balances: dict[str, tuple[float, float]] = {}

    def _balance(self, address: str, now: float) -> float:
        balance, at = self._balances.get(address, (self._burst, now))
        return min(self._burst, balance + (now - at) * self._share)

    def wait_s(self, address: str) -> float:
        """How long ``address`` must wait before its next run (0: run now)."""
        if self._share <= 0:
            return 0.0
        balance = self._balance(address, time.monotonic())
        return 0.0 if balance > 0 else (-balance) / self._share + 0.001

    async def turn(self, address: str) -> None:
        """Wait until ``address`` may run a query (yields the loop at least once)."""
        await asyncio.sleep(0)
        while (delay := self.wait_s(address)) > 0:
            await asyncio.sleep(delay)

    def charge(self, address: str, seconds: float) -> None:
        """``address`` ran queries for ``seconds``."""
        if self._share <= 0:
            return
        now = time.monotonic()
        self._balances[address] = (self._balance(address, now) - seconds, now)
        if len(self._balances) > 4096:  # forget addresses that are back at full allowance
            self._balances = {a: (b, t) for a, (b, t) in self._balances.items() if b < self._burst}


class PartialBudget:
    """Bytes of unfinished WebSocket messages held by the whole server (``max_partial_bytes``),
    and by whom."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._holders: dict[object, int] = {}

    def change(self, holder: object, delta: int) -> None:
        """``holder`` holds ``delta`` more (or fewer) bytes."""
        self.held += delta
        mine = self._holders.get(holder, 0) + delta
        if mine > 0:
            self._holders[holder] = mine
        else:
            self._holders.pop(holder, None)

    def over(self) -> bool:
        """Whether more is held than the limit allows."""
        return 0 < self.limit < self.held

    def largest(self) -> object | None:
        """The holder of the most bytes (None if nobody holds any)."""
        holders = self._holders
        return max(holders, key=holders.__getitem__) if holders else None


class MemoryReturner:
    """After a burst (a big query set released, a large body handled), hands freed heap back
    to the OS a moment later, at most once per ``min_gap_s``."""

    def __init__(self, min_gap_s: float = 2.0) -> None:
        self._min_gap_s = min_gap_s
        self._last = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        """Schedule a trim (idempotent while one is pending)."""
        if self._handle is not None:
            return
        delay = max(0.5, self._last + self._min_gap_s - time.monotonic())
        self._handle = asyncio.get_running_loop().call_later(delay, self._run)

    def _run(self) -> None:
        from marketpulse.reactive.admission import return_memory

        self._handle = None
        self._last = time.monotonic()
        return_memory()


class _Tickable(Protocol):
    def tick(self, now: float) -> None: ...


class ConnectionWatchdog:
    """One periodic task ticking every connection (no timer per socket): Pings, stuck-write drops.

    A pass yields the loop after each ``slice_s`` of work: 1,000 sockets opened together time
    out together, and closing them all in one callback held every push ~100 ms.

    Not the engine's deadline watchdog, which interrupts function runs that overrun their time.
    """

    def __init__(self, interval_s: float, slice_s: float = 0.005) -> None:
        self._interval_s = interval_s
        self._slice_s = slice_s
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
            deadline = time.perf_counter() + self._slice_s
            for member in list(self._members):
                if member not in self._members:
                    continue  # gone while this pass yielded
                try:
                    member.tick(now)
                except Exception:  # one bad socket must not stop the others' keepalives
                    log.exception("watchdog tick failed")
                if time.perf_counter() >= deadline:
                    await yield_to_waiting()
                    deadline = time.perf_counter() + self._slice_s


class _Flushable(Protocol):
    def flush_now(self, now: float, shared: SharedTransitions | None = None) -> None: ...


class Flusher:
    """Fan-out without a task switch per socket.

    After a commit the engine notifies every affected subscriber synchronously; each affected
    socket registers here and ONE callback, run as soon as the commit step returns, writes the
    Transitions directly (the only way Transitions for commits go out), for one ``slice_s`` of
    the loop; the sockets left go first in the next turn's callback. A socket whose transport
    is paused or whose mutation is running only notes that it is stale and sends the latest
    state when it can.

    A large fan-out's writes are collected by ``writer`` and written on several threads once
    every member is flushed (:class:`~marketpulse.reactive.sync._fanout_writer.FanoutWriter`).
    Members count the Transitions they push in :attr:`pushed`: one metric increment per
    callback, not one per socket (a Prometheus counter takes a lock on every ``inc``).
    """

    def __init__(
        self,
        metrics: Metrics | None = None,
        writer: FanoutWriter | None = None,
        slice_s: float = 0.005,
    ) -> None:
        self._dirty: dict[_Flushable, None] = {}
        self._scheduled = False
        self._metrics = metrics
        self.writer = writer if writer is not None else FanoutWriter(threads=0)
        self.slice_s = slice_s
        # Members of the fan-out whose rest the next slice continues (0: none): the writer
        # judges a slice by the whole fan-out's width, not by what is left of it.
        self._width = 0
        self.pushed = 0  # Transitions pushed by the fan-out in progress

    def add(self, member: _Flushable) -> None:
        self._dirty[member] = None
        if not self._scheduled:
            self._scheduled = True
            # First thing next turn: a commit's fan-out does not wait behind the next
            # mutation (a frame read meanwhile starts one with call_soon too). Its further
            # slices go behind what waited (_flush).
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Write the dirty members' Transitions for one slice of this turn; the rest (and
        members dirtied meanwhile) in the next turn, so a wide fan-out does not hold the
        loop (a member not yet written still sends the latest state when its turn comes)."""
        self._scheduled = False
        dirty, self._dirty = self._dirty, {}
        start = time.perf_counter()
        start_cpu = time.thread_time()
        ends = start + self.slice_s
        now = asyncio.get_running_loop().time()
        shared: SharedTransitions = {}  # identical Transitions encoded once per slice
        writer = self.writer
        helper_cpu = writer.helper_cpu_s
        width, self._width = max(len(dirty), self._width), 0
        writer.start(width)
        rest = None
        try:
            members = iter(dirty)
            for member in members:
                try:
                    member.flush_now(now, shared)
                except Exception:  # one socket's failure must not starve the rest
                    log.exception("direct transition write failed")
                if time.perf_counter() >= ends:
                    rest = dict.fromkeys(members)
                    break
        finally:
            threaded = writer.finish()
        if rest:
            # Before any member dirtied since: the rest were waiting first.
            rest.update(self._dirty)
            self._dirty = rest
            self._width = width
            if not self._scheduled:  # (a member added meanwhile scheduled it already)
                self._scheduled = True
                call_after_waiting(self._flush)
        if self._metrics is not None:
            if threaded:
                self._metrics.fanout_threaded.inc()
            if self.pushed:
                self._metrics.transitions.inc(self.pushed)
            self._metrics.fanout.observe(time.perf_counter() - start)
            cpu = time.thread_time() - start_cpu + writer.helper_cpu_s - helper_cpu
            self._metrics.fanout_cpu.inc(cpu)
        self.pushed = 0


_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


@dataclass(frozen=True)
class OriginPolicy:
    """Which browser origins may call the store (CORS, and the WebSocket's ``Origin`` check).

    Attributes:
        allowed: Origins allowed besides the store's own (``*``: any). Empty: the store's own
            origin and any ``localhost`` origin (development) only, and the WebSocket takes
            any origin; once a list is configured the WebSocket checks it too.
        credentials: Whether CORS responses allow credentials (cookies); never with ``*``.
    """

    allowed: tuple[str, ...] = ()
    credentials: bool = False

    def allows(self, origin: str, host: str | None) -> bool:
        """Whether a request with this ``Origin``, sent to this ``Host``, may be answered."""
        scheme, sep, rest = origin.partition("://")
        if not sep or scheme not in ("http", "https"):
            return "*" in self.allowed  # e.g. "null" (sandboxed frames, file: pages)
        if host is not None and rest == host:
            return True  # the store's own origin
        if "*" in self.allowed or origin in self.allowed:
            return True
        hostname = rest.rsplit(":", 1)[0] if not rest.endswith("]") else rest
        return not self.allowed and hostname in _LOCAL_HOSTS

    def websocket_allowed(self, origin: str | None, host: str | None) -> bool:
        """The WebSocket handshake's check: only with a configured list, only for browsers."""
        if not self.allowed or origin is None:
            return True
        return self.allows(origin, host)


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
    origins: OriginPolicy = field(default_factory=OriginPolicy)
    watchdog: ConnectionWatchdog = field(init=False)
    flusher: Flusher = field(init=False)
    admission: Admission = field(init=False)
    query_share: QueryShare = field(init=False)
    partial: PartialBudget = field(init=False)
    memory: MemoryReturner = field(default_factory=MemoryReturner)
    fanout: FanoutWriter = field(default_factory=fanout_writer_from_env)

    def __post_init__(self) -> None:
        limits = self.limits
        self.admission = Admission(limits)
        refused = self.metrics.refused
        self.admission.on_refused = lambda reason: refused.labels("connection").inc()
        self.admission.on_dropped = self._http_client_dropped
        credentials = refused.labels("credentials")  # exported from the start, at 0
        self.auth.on_refused = credentials.inc
        self.query_share = QueryShare(
            limits.client_query_share, max(limits.client_query_share, limits.work_slice_s)
        )
        self.partial = PartialBudget(limits.max_partial_bytes)
        self.metrics.watch_engine(self.engine)
        self.flusher = Flusher(self.metrics, self.fanout, limits.work_slice_s)
        self.watchdog = ConnectionWatchdog(
            min(1.0, limits.client_send_timeout_s / 4, limits.ping_interval_s / 4),
            limits.work_slice_s,
        )

    def _http_client_dropped(self) -> None:
        self.metrics.dropped.inc()
        self.memory.soon()  # its unread response was freed: hand the heap back
