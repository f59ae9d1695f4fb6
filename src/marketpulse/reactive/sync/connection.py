"""One sync WebSocket's protocol logic, driven by callbacks: no task, Event or Queue while idle.

The framing side (:class:`~marketpulse.reactive.sync.websocket.SyncSocket`, an
``asyncio.Protocol``) hands every complete text message to :meth:`SyncConnection.message_received`
and forwards the transport's flow control. Everything the connection says goes straight to the
socket:

* messages are parsed and acted on at once (subscribe/unsubscribe, check credentials, start an
  action, queue a mutation); the Transition they call for is written before the callback returns;
* after a commit the engine notifies subscribers synchronously; the gateway's :class:`Flusher`
  then writes every affected socket's Transition from one callback;
* while the transport is paused (its write buffer is over the high-water mark) updates only set a
  flag, and on resume ONE Transition goes out from the latest results: a slow socket holds at most
  the Transition that filled it plus that one, and skips every version in between;
* mutations run one at a time in arrival order, on a task that exists only while some are pending.
  No Transition is built while one runs, and the next waits for the Transition that follows the
  previous response (clients resolve mutations on it);
* the gateway's :class:`Watchdog` sends Pings to quiet sockets and aborts those whose writes have
  been paused longer than the client send timeout.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol

import structlog

from marketpulse.reactive.access import ANONYMOUS, AccessDenied
from marketpulse.reactive.gateway import Gateway
from marketpulse.reactive.sync.protocol import (
    ActionRequested,
    AuthenticateRequested,
    FunctionOutcome,
    MutationRequested,
    ProtocolError,
    QueryAdded,
    QueryRemoved,
    SyncProtocol,
    failed_outcome,
)

__all__ = ["Socket", "SyncConnection"]

log = structlog.get_logger("marketpulse.sync")


class Socket(Protocol):
    """The framing side, as the connection uses it (implemented by ``SyncSocket``)."""

    def send_text(self, payload: bytes) -> None:
        """Write one text frame now (the transport buffers what the kernel cannot take)."""

    def close(self, code: int, reason: str) -> None:
        """Start the WebSocket closing handshake."""

    def abort(self) -> None:
        """Drop the TCP connection now, without waiting for buffered data."""


class _Sub:
    """One query of the set: the engine's listener and what re-subscribing needs."""

    __slots__ = ("args", "conn", "path", "query", "query_id", "static")

    def __init__(
        self, conn: SyncConnection, query_id: int, path: str, args: dict[str, Any]
    ) -> None:
        self.conn = conn
        self.query_id = query_id
        self.path = path
        self.args = args
        self.query: Any = None
        # A result that never changes (bad args, failed subscribe): no engine subscription.
        self.static: FunctionOutcome | None = None

    def on_query_updated(self, query: Any) -> None:
        self.conn.query_updated()


_Pending = tuple[MutationRequested, Any]


class SyncConnection:
    """One client socket speaking the Convex sync protocol.

    Args:
        gateway: the engine and everything the front doors share.
        socket: where frames go.
    """

    __slots__ = (
        "_actions",
        "_done",
        "_dropped",
        "_gw",
        "_identity",
        "_mutating",
        "_mutations",
        "_proto",
        "_queued",
        "_quiet_since",
        "_sent",
        "_socket",
        "_stale",
        "_stalled_since",
        "_subs",
        "_transition_sent",
        "_worker",
    )

    def __init__(self, gateway: Gateway, socket: Socket) -> None:
        self._gw = gateway
        self._socket = socket
        self._proto = SyncProtocol()
        self._identity: Any = gateway.identity_of(ANONYMOUS)
        self._subs: dict[int, _Sub] = {}
        # Created on first use: most sockets only subscribe (an empty deque alone is ~600 B).
        self._mutations: deque[_Pending] | None = None
        self._actions: set[asyncio.Task[None]] | None = None
        self._worker: asyncio.Task[None] | None = None
        # Set by the mutation worker while it waits for the Transition after a response.
        self._transition_sent: asyncio.Future[None] | None = None
        self._mutating = False
        # Results changed while a Transition could not be written (paused / mutation running).
        self._stale = False
        self._queued = False
        self._stalled_since: float | None = None
        # Keepalive bookkeeping at watchdog granularity: a flag per write, no clock read.
        self._sent = True  # the first tick starts the quiet clock
        self._quiet_since = 0.0
        self._dropped = False
        self._done = False
        gateway.metrics.connections.inc()
        gateway.watchdog.add(self)

    # ----------------------------------------------------------------- socket callbacks

    def message_received(self, data: str | bytes) -> None:
        """Act on one complete WebSocket message (text as ``str``, binary as ``bytes``)."""
        proto = self._proto
        if proto.closed:
            return
        limit = self._gw.limits.max_message_bytes
        if len(data) > limit:
            self._fatal(f"MessageTooLarge: {len(data)} bytes exceeds the limit of {limit}")
            return
        try:
            events = proto.receive(data)
        except ProtocolError as exc:
            self._fatal(str(exc))
            return
        for event in events:
            if isinstance(event, QueryAdded):
                self._add_query(event)
            elif isinstance(event, QueryRemoved):
                self._remove_query(event.query_id)
            elif isinstance(event, MutationRequested):
                self._queue_mutation(event)
            elif isinstance(event, ActionRequested):
                self._start_action(event)
            elif isinstance(event, AuthenticateRequested):
                self._authenticate(event)
            if proto.closed:
                return
        self._flush()

    def fail(self, error: str) -> None:
        """The client broke the protocol below the message level: FatalError, then close."""
        if not self._proto.closed:
            self._fatal(error)

    def pause_writing(self) -> None:
        """The transport's buffer is full: hold Transitions back until it drains."""
        self._stalled_since = asyncio.get_running_loop().time()

    def resume_writing(self) -> None:
        """The buffer drained: send ONE Transition from the latest results if any is due."""
        self._stalled_since = None
        if self._stale or self._proto.transition_due:
            self._flush()

    def connection_lost(self) -> None:
        """The socket is gone: release every subscription and stop this socket's work."""
        self._finish()

    # ----------------------------------------------------------------- engine, flusher, watchdog

    def query_updated(self) -> None:
        """A subscribed result changed (called synchronously by the engine after a commit)."""
        if not self._queued and not self._done:
            self._queued = True
            self._gw.flusher.add(self)

    def flush_now(self, now: float, shared: dict[Any, bytes] | None = None) -> None:
        """The flusher's callback: write the Transition now, sharing encodings in ``shared``."""
        self._queued = False
        self._flush(shared)

    def tick(self, now: float) -> None:
        """Called about once a second by the watchdog: drop stuck clients, keep idle ones alive."""
        limits = self._gw.limits
        stalled = self._stalled_since
        if stalled is not None:
            if now - stalled > limits.client_send_timeout_s and not self._dropped:
                # The client stopped reading: drop it rather than buffer for it. An abort, not
                # a close: a polite close would wait on buffered data nobody reads.
                self._dropped = True
                self._gw.metrics.dropped.inc()
                log.warning(
                    "dropping a client that stopped reading",
                    timeout_s=limits.client_send_timeout_s,
                )
                self._proto.closed = True
                self._finish()
                self._socket.abort()
            return
        if self._sent:
            self._sent = False
            self._quiet_since = now
        elif now - self._quiet_since >= limits.ping_interval_s and not self._proto.closed:
            self._write(self._proto.ping())
            self._sent = False
            self._quiet_since = now

    # ----------------------------------------------------------------- output

    def _write(self, frame: bytes) -> None:
        self._sent = True
        self._socket.send_text(frame)

    def _flush(self, shared: dict[Any, bytes] | None = None) -> None:
        """Write the next Transition if one is due and the socket can take it."""
        proto = self._proto
        if proto.closed or self._done:
            return
        if self._stalled_since is not None or self._mutating:
            self._stale = True
            return
        self._stale = False
        transition = proto.build_transition(self._gw.engine.ts, self._results(), shared=shared)
        if transition is None:
            return
        self._write(transition)
        for frame in proto.take_overflow():
            self._write(frame)
        self._gw.metrics.transitions.inc()
        waiter = self._transition_sent
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _results(self) -> dict[int, FunctionOutcome]:
        results: dict[int, FunctionOutcome] = {}
        for query_id, sub in self._subs.items():
            results[query_id] = sub.static if sub.static is not None else sub.query.result
        return results

    def _fatal(self, error: str) -> None:
        log.info("closing a sync socket on a protocol error", error=error[:200])
        self._close_with(self._proto.fatal_error(error))

    def _close_with(self, frame: bytes) -> None:
        self._write(frame)
        self._finish()
        # The backend closes these with a frame that has no status code; clients take 1000.
        self._socket.close(1000, "")

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self._proto.closed = True
        waiter = self._transition_sent
        if waiter is not None and not waiter.done():
            waiter.cancel()
        # Mutations already running finish on their own shielded task (the outcome is logged
        # for a re-send); what is still queued is dropped with the socket, as the client
        # re-sends it on its next connection.
        if self._worker is not None:
            self._worker.cancel()
        for task in self._actions or ():
            task.cancel()
        self._mutations = None
        for query_id in list(self._subs):
            self._remove_query(query_id)
        self._gw.watchdog.discard(self)
        self._gw.metrics.connections.dec()

    # ----------------------------------------------------------------- queries

    def _add_query(self, event: QueryAdded) -> None:
        self._gw.metrics.subscriptions.inc()
        sub = _Sub(self, event.query_id, event.udf_path, event.args)
        self._subs[event.query_id] = sub
        if event.args_error is not None:
            sub.static = failed_outcome(event.args_error)
            return
        self._subscribe(sub)

    def _subscribe(self, sub: _Sub) -> None:
        try:
            sub.query = self._gw.engine.subscribe(sub.path, sub.args, self._identity, sub)
        except Exception as exc:  # an engine bug must not take the socket down
            log.exception("subscribe failed", path=sub.path)
            sub.static = failed_outcome(f"InternalServerError: {type(exc).__name__}")

    def _remove_query(self, query_id: int) -> None:
        sub = self._subs.pop(query_id, None)
        if sub is None:
            return
        self._gw.metrics.subscriptions.dec()
        if sub.query is not None:
            self._gw.engine.unsubscribe(sub.query, sub)
            sub.query = None

    # ----------------------------------------------------------------- auth

    def _authenticate(self, event: AuthenticateRequested) -> None:
        gw = self._gw
        try:
            caller = gw.auth.websocket(event.token_type, event.value, event.acting_as)
        except AccessDenied as exc:
            self._close_with(self._proto.reject_auth(str(exc)))
            return
        self._identity = gw.identity_of(caller)
        # A new identity re-runs every query under it.
        for sub in self._subs.values():
            if sub.query is not None:
                gw.engine.unsubscribe(sub.query, sub)
                sub.query = None
                self._subscribe(sub)
        self._proto.accept_auth()

    # ----------------------------------------------------------------- mutations

    def _queue_mutation(self, event: MutationRequested) -> None:
        pending = self._mutations
        if pending is None:
            pending = self._mutations = deque()
        elif len(pending) >= self._gw.limits.max_pending_mutations:
            self._close_with(self._proto.fatal_error("TooManyConcurrentRequests"))
            return
        pending.append((event, self._identity))
        if self._worker is None:
            # The worker exists only while mutations are pending; it exits when they are done.
            self._worker = asyncio.get_running_loop().create_task(self._run_mutations())

    async def _run_mutations(self) -> None:
        proto = self._proto
        try:
            while self._mutations and not self._done:
                event, identity = self._mutations[0]
                # No Transition goes out while the mutation runs: one built after its commit but
                # before its response would show the write before the client knows it committed.
                self._mutating = True
                try:
                    outcome, ts = await self._run_mutation(event, identity)
                finally:
                    self._mutating = False
                if self._done:
                    return
                self._mutations.popleft()
                self._write(proto.mutation_response(event.request_id, outcome, ts))
                self._flush()
                if self._stale and not self._done:
                    # Paused: the next mutation waits for the Transition that reflects this
                    # one, so the response precedes it and clients see their writes in order.
                    self._transition_sent = asyncio.get_running_loop().create_future()
                    try:
                        await self._transition_sent
                    finally:
                        self._transition_sent = None
        except asyncio.CancelledError:
            return
        except Exception as exc:
            log.error("mutation worker failed", error=repr(exc))
            self._finish()
            self._socket.abort()
        finally:
            self._worker = None
            if not self._mutations:
                self._mutations = None

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
            result = await self._gw.engine.run_mutation(event.udf_path, event.args, identity)
        except Exception as exc:
            log.exception("mutation crashed", path=event.udf_path)
            return failed_outcome(f"InternalServerError: {type(exc).__name__}"), None
        if result.success:
            self._gw.metrics.commits.inc()
        return result, (result.ts if result.success else None)

    # ----------------------------------------------------------------- actions

    def _start_action(self, event: ActionRequested) -> None:
        actions = self._actions
        if actions is None:
            actions = self._actions = set()
        if len(actions) >= self._gw.limits.max_concurrent_actions:
            self._write(
                self._proto.action_response(
                    event.request_id, failed_outcome("TooManyConcurrentRequests: too many actions")
                )
            )
            return
        task = asyncio.get_running_loop().create_task(self._run_action(event, self._identity))
        actions.add(task)
        task.add_done_callback(actions.discard)

    async def _run_action(self, event: ActionRequested, identity: Any) -> None:
        outcome: FunctionOutcome
        if event.args_error is not None:
            outcome = failed_outcome(event.args_error)
        else:
            try:
                outcome = await self._gw.engine.run_action(event.udf_path, event.args, identity)
            except Exception as exc:
                log.exception("action crashed", path=event.udf_path)
                outcome = failed_outcome(f"InternalServerError: {type(exc).__name__}")
        if not self._proto.closed:
            self._write(self._proto.action_response(event.request_id, outcome))
            self._flush()
