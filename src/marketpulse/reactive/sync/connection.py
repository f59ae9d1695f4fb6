"""The asyncio side of one sync WebSocket: the sans-I/O protocol + the engine's subscriptions.

Three tasks per connection:

* the reader (the caller of :meth:`SyncConnection.run`) parses frames and acts on them at once:
  subscribe/unsubscribe, queue a mutation, start an action, check credentials;
* the sender is the only writer. When woken it sends queued responses first, then builds ONE
  Transition from the latest result of every subscribed query. While a send is blocked on a slow
  socket, updates only set a flag, so the socket never has more than one Transition in flight
  and catches up straight to the latest state; a send blocked longer than the client send
  timeout drops the client;
* the mutation worker runs this socket's mutations one at a time in arrival order, and waits for
  the Transition that follows each response (clients resolve mutations on it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any, Protocol

import structlog

from marketpulse.reactive.access import ANONYMOUS, AccessDenied, Caller
from marketpulse.reactive.gateway import Gateway
from marketpulse.reactive.sync.protocol import (
    ActionRequested,
    AuthenticateRequested,
    ClientEvent,
    FunctionOutcome,
    MutationRequested,
    ProtocolError,
    QueryAdded,
    QueryRemoved,
    SyncProtocol,
    failed_outcome,
)

__all__ = ["ClientGone", "SyncConnection", "Transport"]

log = structlog.get_logger("marketpulse.sync")


class ClientGone(Exception):
    """The socket closed under us."""


class Transport(Protocol):
    """A WebSocket as the connection uses it (the Starlette binding lives in server.py)."""

    async def receive(self) -> str | bytes | None:
        """The next message, or None once the peer has closed."""

    async def send(self, data: bytes) -> None:
        """Send one text frame (raises :class:`ClientGone` if the socket is closed)."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close politely."""

    def abort(self) -> None:
        """Drop the TCP connection now, without waiting for buffered data."""

    def write_now(self, data: bytes) -> bool:
        """Write one text frame synchronously if the socket can take it now; else False."""


class _Listener:
    __slots__ = ("conn", "query_id")

    def __init__(self, conn: SyncConnection, query_id: int) -> None:
        self.conn = conn
        self.query_id = query_id

    def on_query_updated(self, query: Any) -> None:
        self.conn.query_updated()


class SyncConnection:
    """One client socket speaking the Convex sync protocol."""

    def __init__(self, gateway: Gateway, transport: Transport) -> None:
        self._gw = gateway
        self._engine = gateway.engine
        self._transport = transport
        self._proto = SyncProtocol()
        self._caller: Caller = ANONYMOUS
        self._identity: Any = gateway.identity_of(ANONYMOUS)
        self._subs: dict[int, tuple[Any, _Listener]] = {}
        self._static: dict[int, FunctionOutcome] = {}
        self._paths: dict[int, tuple[str, dict[str, Any]]] = {}
        self._responses: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._close_after_flush: tuple[int, str] | None = None
        self._mutations: asyncio.Queue[tuple[MutationRequested, Any]] = asyncio.Queue()
        self._actions: set[asyncio.Task[None]] = set()
        self._response_seq = 0
        self._flushed_seq = 0
        self._flushed = asyncio.Event()
        self._mutation_running = False
        self._done = False
        self._send_started: float | None = None
        self._last_sent = asyncio.get_running_loop().time()
        self._ping_due = False
        self._dropped = False
        self._idle = False

    # ----------------------------------------------------------------- driving

    def wake(self) -> None:
        """Something changed: the sender will build a Transition when the socket can take it."""
        self._wake.set()

    def query_updated(self) -> None:
        """A subscribed result changed (called synchronously by the engine after a commit)."""
        if self._idle and not self._wake.is_set():
            self._gw.flusher.add(self)
        else:
            self.wake()

    def flush_now(self, now: float, shared: dict[Any, bytes] | None = None) -> None:
        """Write the Transition directly if the sender is idle and the socket writable."""
        if (
            not self._idle
            or self._wake.is_set()
            or self._responses
            or self._mutation_running
            or self._close_after_flush is not None
            or self._proto.closed
        ):
            self.wake()
            return
        transition = self._proto.build_transition(self._engine.ts, self._results(), shared=shared)
        if transition is None:
            return
        overflow = self._proto.take_overflow()
        if self._transport.write_now(transition):
            self._gw.metrics.transitions.inc()
            self._last_sent = now
            self._ping_due = False
        else:
            # Built but not writable: the sender sends it (first, nothing else is queued).
            self._responses.append(transition)
        if overflow or self._responses:
            self._responses.extend(overflow)
            self.wake()

    async def run(self) -> None:
        """Serve the socket until it closes; always releases every subscription."""
        metrics = self._gw.metrics
        metrics.connections.inc()
        watchdog = self._gw.watchdog
        watchdog.add(self)
        sender = asyncio.create_task(self._send_loop(), name="sync-sender")
        worker = asyncio.create_task(self._mutation_loop(), name="sync-mutations")
        try:
            reader = asyncio.ensure_future(self._read_loop())
            done, _ = await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
            if reader not in done:
                reader.cancel()
            elif self._close_after_flush is not None and sender not in done:
                # A FatalError/AuthError is queued: let the sender flush it and close.
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(
                        asyncio.shield(sender), self._gw.limits.client_send_timeout_s
                    )
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    if not isinstance(exc, ClientGone):
                        log.error("sync connection failed", error=repr(exc))
        finally:
            self._done = True
            for task in (sender, worker, *self._actions):
                task.cancel()
            for task in (sender, worker, *self._actions):
                with contextlib.suppress(BaseException):
                    await task
            self._release_all()
            watchdog.discard(self)
            metrics.connections.dec()
            with contextlib.suppress(Exception):
                await self._transport.close()

    async def _read_loop(self) -> None:
        limit = self._gw.limits.max_message_bytes
        while not self._proto.closed:
            data = await self._transport.receive()
            if data is None:
                return
            if len(data) > limit:
                await self._fatal(
                    f"MessageTooLarge: {len(data)} bytes exceeds the limit of {limit}"
                )
                return
            try:
                events = self._proto.receive(data)
            except ProtocolError as exc:
                await self._fatal(str(exc))
                return
            for event in events:
                self._handle(event)
                if self._proto.closed:
                    return

    def _handle(self, event: ClientEvent) -> None:
        if isinstance(event, QueryAdded):
            self._add_query(event)
        elif isinstance(event, QueryRemoved):
            self._remove_query(event.query_id)
        elif isinstance(event, MutationRequested):
            if self._mutations.qsize() >= self._gw.limits.max_pending_mutations:
                self._responses.append(self._proto.fatal_error("TooManyConcurrentRequests"))
                self._close_after_flush = (1013, "TooManyConcurrentRequests")
            else:
                self._mutations.put_nowait((event, self._identity))
        elif isinstance(event, ActionRequested):
            self._start_action(event)
        elif isinstance(event, AuthenticateRequested):
            self._authenticate(event)
        self.wake()

    # ----------------------------------------------------------------- queries

    def _add_query(self, event: QueryAdded) -> None:
        self._gw.metrics.subscriptions.inc()
        self._paths[event.query_id] = (event.udf_path, event.args)
        if event.args_error is not None:
            self._static[event.query_id] = failed_outcome(event.args_error)
            return
        self._subscribe(event.query_id, event.udf_path, event.args)

    def _subscribe(self, query_id: int, path: str, args: dict[str, Any]) -> None:
        listener = _Listener(self, query_id)
        try:
            query = self._engine.subscribe(path, args, self._identity, listener)
        except Exception as exc:  # an engine bug must not take the socket down
            log.exception("subscribe failed", path=path)
            self._static[query_id] = failed_outcome(f"InternalServerError: {type(exc).__name__}")
            return
        self._subs[query_id] = (query, listener)

    def _remove_query(self, query_id: int) -> None:
        self._gw.metrics.subscriptions.dec()
        self._paths.pop(query_id, None)
        self._static.pop(query_id, None)
        entry = self._subs.pop(query_id, None)
        if entry is not None:
            self._engine.unsubscribe(*entry)

    def _release_all(self) -> None:
        for query_id in list(self._paths):
            self._remove_query(query_id)

    def _results(self) -> dict[int, FunctionOutcome]:
        results: dict[int, FunctionOutcome] = dict(self._static)
        for query_id, (query, _) in self._subs.items():
            results[query_id] = query.result
        return results

    # ----------------------------------------------------------------- auth

    def _authenticate(self, event: AuthenticateRequested) -> None:
        try:
            caller = self._gw.auth.websocket(event.token_type, event.value, event.acting_as)
        except AccessDenied as exc:
            self._responses.append(self._proto.reject_auth(str(exc)))
            # The backend closes auth failures with a frame that has no status code.
            self._close_after_flush = (1000, "")
            return
        self._caller = caller
        self._identity = self._gw.identity_of(caller)
        # A new identity re-runs every query under it.
        for query_id, (query, listener) in list(self._subs.items()):
            self._engine.unsubscribe(query, listener)
            del self._subs[query_id]
            path, args = self._paths[query_id]
            self._subscribe(query_id, path, args)
        self._proto.accept_auth()

    # ----------------------------------------------------------------- requests

    async def _mutation_loop(self) -> None:
        while True:
            event, identity = await self._mutations.get()
            # No Transition goes out while the mutation runs: one built after its commit but
            # before its response would show the write before the client knows it committed.
            self._mutation_running = True
            try:
                outcome, ts = await self._run_mutation(event, identity)
            finally:
                self._mutation_running = False
            self._responses.append(self._proto.mutation_response(event.request_id, outcome, ts))
            self._response_seq += 1
            seq = self._response_seq
            self.wake()
            # The next mutation waits for the Transition that reflects this one, so the
            # response always precedes it and clients see their writes in order.
            while self._flushed_seq < seq and not self._done:
                self._flushed.clear()
                await self._flushed.wait()

    async def _run_mutation(
        self, event: MutationRequested, identity: Any
    ) -> tuple[Any, int | None]:
        if event.args_error is not None:
            return failed_outcome(event.args_error), None
        session = self._proto.session_id
        key = (session, event.request_id) if session else None
        log_ = self._gw.mutation_log
        if key is not None:
            previous = log_.get(key)
            if previous is not None:
                return await asyncio.shield(previous)
        # Its own task, shielded: if this socket dies mid-mutation, the outcome is still
        # recorded for the re-send that arrives on the client's next connection.
        task = asyncio.ensure_future(self._execute_mutation(event, identity))
        if key is not None:
            log_.put(key, task)
        return await asyncio.shield(task)

    async def _execute_mutation(
        self, event: MutationRequested, identity: Any
    ) -> tuple[Any, int | None]:
        try:
            result = await self._engine.run_mutation(event.udf_path, event.args, identity)
        except Exception as exc:
            log.exception("mutation crashed", path=event.udf_path)
            return failed_outcome(f"InternalServerError: {type(exc).__name__}"), None
        if result.success:
            self._gw.metrics.commits.inc()
        return result, (result.ts if result.success else None)

    def _start_action(self, event: ActionRequested) -> None:
        if len(self._actions) >= self._gw.limits.max_concurrent_actions:
            self._responses.append(
                self._proto.action_response(
                    event.request_id, failed_outcome("TooManyConcurrentRequests: too many actions")
                )
            )
            return
        task = asyncio.create_task(self._run_action(event, self._identity))
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)

    async def _run_action(self, event: ActionRequested, identity: Any) -> None:
        outcome: FunctionOutcome
        if event.args_error is not None:
            outcome = failed_outcome(event.args_error)
        else:
            try:
                outcome = await self._engine.run_action(event.udf_path, event.args, identity)
            except Exception as exc:
                log.exception("action crashed", path=event.udf_path)
                outcome = failed_outcome(f"InternalServerError: {type(exc).__name__}")
        if not self._proto.closed:
            self._responses.append(self._proto.action_response(event.request_id, outcome))
            self.wake()

    # ----------------------------------------------------------------- output

    async def _send(self, data: bytes) -> None:
        # No timer per send: the watchdog drops a client whose send has been stuck too long.
        self._send_started = asyncio.get_running_loop().time()
        try:
            await self._transport.send(data)
        finally:
            self._send_started = None
        self._last_sent = asyncio.get_running_loop().time()

    def tick(self, now: float) -> None:
        """Called about once a second by the watchdog: drop stuck clients, keep idle ones alive."""
        started = self._send_started
        limits = self._gw.limits
        if started is not None:
            if now - started > limits.client_send_timeout_s and not self._dropped:
                # The client stopped reading: drop it rather than buffer for it.
                self._dropped = True
                self._gw.metrics.dropped.inc()
                log.warning(
                    "dropping a client that stopped reading",
                    timeout_s=limits.client_send_timeout_s,
                )
                self._proto.closed = True
                self._transport.abort()
        elif now - self._last_sent >= limits.ping_interval_s:
            self._ping_due = True
            self.wake()

    async def _send_loop(self) -> None:
        while True:
            self._idle = True
            await self._wake.wait()
            self._idle = False
            self._wake.clear()
            while self._responses:
                await self._send(self._responses.popleft())
            if self._close_after_flush is not None:
                code, reason = self._close_after_flush
                await self._transport.close(code, reason)
                raise ClientGone()
            flushed_through = self._response_seq
            if not self._proto.closed and not self._mutation_running:
                transition = self._proto.build_transition(self._engine.ts, self._results())
                if transition is not None:
                    await self._send(transition)
                    for frame in self._proto.take_overflow():
                        await self._send(frame)
                    self._gw.metrics.transitions.inc()
                    self._ping_due = False
                # This frame waits here until the next change: without this it would keep the
                # last Transition alive, ~4 KiB per idle connection (tracemalloc, bench/fanout).
                transition = None
            if flushed_through > self._flushed_seq:
                self._flushed_seq = flushed_through
                self._flushed.set()
            if self._ping_due:
                self._ping_due = False
                await self._send(self._proto.ping())
            if self._dropped:
                raise ClientGone()

    async def _fatal(self, error: str) -> None:
        log.info("closing a sync socket on a protocol error", error=error[:200])
        self._responses.append(self._proto.fatal_error(error))
        self._close_after_flush = (1000, "")
        self.wake()
