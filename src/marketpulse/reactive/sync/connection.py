"""Drives one socket's sync protocol core with the engine: no task, Event or Queue while idle.

The framing side (:class:`~marketpulse.reactive.sync.websocket.SyncSocket`, an
``asyncio.Protocol``) hands every complete text message to :meth:`SyncConnection.message_received`
and forwards the transport's flow control. The protocol itself (parsing, versions, every frame's
bytes, keepalive timing) is the sans-I/O :class:`~marketpulse.reactive.sync.protocol.SyncProtocol`;
this driver feeds it, acts on its events with the engine, and writes what it queues at once:

* messages are acted on at once (subscribe/unsubscribe, check credentials, start an action,
  queue a mutation); the Transition they call for is written before the callback returns;
* after a commit the engine notifies subscribers synchronously; the gateway's :class:`Flusher`
  then writes every affected socket's Transition from one callback;
* while the transport is paused (its write buffer is over the high-water mark) updates only set a
  flag, and on resume ONE Transition goes out from the latest results: a slow socket holds at most
  the Transition that filled it plus that one, and skips every version in between;
* mutations are pipelined: each runs as soon as the ones before it have run (their commits
  sequenced, their durable writes maybe still in flight), responses go out in arrival order as
  each commit is applied, and every Transition is preceded by the responses that are ready
  (the rules are at the mutations section below); no task: callbacks only;
* the gateway's watchdog ticks every socket about once a second: the core queues a Ping on a
  quiet one, and the driver aborts one whose writes have been paused longer than the client
  send timeout, closes one that sent no ``Connect`` in time, one idle with nothing subscribed,
  and one whose unfinished message (a partial frame or fragments) has waited too long;
* a query set's first runs are paced: at most ``work_slice_s`` of them per loop turn, charged
  to the client's address (:class:`~marketpulse.reactive.gateway.QueryShare`), so a huge
  ``ModifyQuerySet`` cannot stall everyone else; the Transition goes out when all have run.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from typing import Any, Protocol

import orjson
import structlog

from marketpulse._aio import call_after_waiting
from marketpulse.reactive.access import ANONYMOUS, AccessDenied, Caller
from marketpulse.reactive.admission import THROTTLE
from marketpulse.reactive.auth import KeysPending
from marketpulse.reactive.gateway import Gateway, ReplayRejected
from marketpulse.reactive.sync.protocol import (
    ActionRequested,
    AuthenticateRequested,
    Connected,
    FunctionOutcome,
    MutationRequested,
    QueryAdded,
    QueryRemoved,
    SharedTransitions,
    SyncProtocol,
    failed_outcome,
)

__all__ = ["Socket", "SyncConnection"]

log = structlog.get_logger("marketpulse.sync")

# Messages a client may send while its token waits for the provider's keys (the official
# clients send a few: the query set, maybe mutations); more is abuse.
_MAX_HELD_MESSAGES = 256


# A close frame's reason is at most 123 bytes (RFC 6455 5.5: 125 with the code).
_MAX_CLOSE_REASON = 120


def _log_protocol_error(error: str) -> None:
    THROTTLE.log(log, "info", "closing a sync socket on a protocol error", error=error[:200])


# A query's arguments until its first run decodes them (_Sub.added).
_NOT_DECODED: dict[str, Any] = {}

# A socket that held this many queries leaves a heap worth handing back when it goes.
_BIG_QUERY_SET = 256


class Socket(Protocol):
    """The framing side, as the connection uses it (implemented by ``SyncSocket``)."""

    def send_text(self, payload: bytes) -> None:
        """Write one text frame now (the transport buffers what the kernel cannot take)."""

    def close(self, code: int, reason: str) -> None:
        """Start the WebSocket closing handshake."""

    def abort(self) -> None:
        """Drop the TCP connection now, without waiting for buffered data."""

    def pause_reading(self) -> None:
        """Read nothing more from the client until :meth:`resume_reading`."""

    def resume_reading(self) -> None:
        """Read from the client again."""


class _Sub:
    """One query of the set: the engine's listener and what re-subscribing needs."""

    __slots__ = ("added", "args", "conn", "journal", "path", "query", "query_id", "static")

    def __init__(
        self,
        conn: SyncConnection,
        query_id: int,
        path: str,
        args: dict[str, Any],
        journal: str | None = None,
    ) -> None:
        self.conn = conn
        self.query_id = query_id
        self.path = path
        self.args = args
        # The ModifyQuerySet entry whose arguments are decoded just before the first run (in
        # a paced slice, not in the callback that received the whole set).
        self.added: QueryAdded | None = None
        # Where a paginated page ends (the client's journal), kept across re-subscribes.
        self.journal = journal
        self.query: Any = None
        # A result that never changes (bad args, failed subscribe): no engine subscription.
        self.static: FunctionOutcome | None = None

    def on_query_updated(self, query: Any) -> None:
        self.conn.query_updated(self)

    def on_query_stale(self, query: Any) -> None:
        self.conn.query_stale(self)


class _Entry:
    """One mutation of the socket, from its arrival until its response is sent."""

    __slots__ = ("event", "future", "identity", "own", "read_at")

    def __init__(self, event: MutationRequested, identity: Any, read_at: float) -> None:
        self.event = event
        self.identity = identity  # the identity it arrived under
        self.read_at = read_at  # perf_counter when the bytes that completed it were read
        # Its outcome (a FunctionOutcome; the engine's FunctionResult carries the ts), once
        # started: the engine's future, or the logged run a re-send repeats.
        self.future: asyncio.Future[Any] | None = None
        self.own = False  # run by this socket (not a re-send answered from the log)


def _applied_behind(entries: deque[_Entry]) -> bool:
    """Whether a mutation after the first has committed already (its response still due)."""
    for i in range(1, len(entries)):
        future = entries[i].future
        if future is None:
            return False
        if _succeeded(future):
            return True
    return False


def _succeeded(future: asyncio.Future[Any]) -> bool:
    return (
        future.done()
        and not future.cancelled()
        and future.exception() is None
        and bool(future.result().success)
    )


def _done(outcome: FunctionOutcome) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(outcome)
    return future


class SyncConnection:
    """One client socket speaking the Convex sync protocol.

    Args:
        gateway: the engine and everything the front doors share.
        socket: where frames go.
    """

    __slots__ = (
        "_actions",
        "_address",
        "_auth_task",
        "_barrier",
        "_behind",
        "_connected",
        "_done",
        "_dropped",
        "_expiry",
        "_gw",
        "_held",
        "_identity",
        "_last_received",
        "_most_queries",
        "_mutations",
        "_opened_at",
        "_pacer",
        "_pending",
        "_proto",
        "_queued",
        "_reading_paused",
        "_slow",
        "_socket",
        "_stale",
        "_stalled_since",
        "_started",
        "_starter",
        "_subs",
        "_unresolved",
        "partial_since",
        "read_at",
    )

    def __init__(self, gateway: Gateway, socket: Socket, address: str = "?") -> None:
        self._gw = gateway
        self._socket = socket
        self._address = address
        limits = gateway.limits
        self._proto = SyncProtocol(
            max_message_bytes=limits.max_message_bytes,
            ping_interval_s=limits.ping_interval_s,
            max_queries=limits.max_queries,
            max_query_changes=limits.max_query_changes,
            max_query_set_bytes=limits.max_query_set_bytes,
            max_json_depth=limits.max_json_depth,
        )
        now = asyncio.get_running_loop().time()
        self._opened_at = now
        self._last_received = now
        self._connected = False
        # Set by the socket while a message is unfinished (message_timeout_s).
        self.partial_since: float | None = None
        # perf_counter of the socket's latest read (set by SyncSocket): when a mutation
        # arrived, for the mutation wait metric (one held during authentication counts from
        # the read before its replay).
        self.read_at = time.perf_counter()
        # Subscriptions whose first run is still to come (paced, see _run_pending).
        self._pending: deque[_Sub] | None = None
        self._pacer: asyncio.Handle | None = None
        # First runs of slow functions in progress off the event loop (created on first use).
        self._slow: set[asyncio.Task[None]] | None = None
        # Queries whose re-run after a commit is off the event loop: until they are current,
        # a Transition would mix two timestamps, so none goes out (created on first use).
        self._behind: set[_Sub] | None = None
        self._most_queries = 0
        self._identity: Any = gateway.identity_of(ANONYMOUS)
        self._subs: dict[int, _Sub] = {}
        # Mutations from arrival to response, in order; created on first use: most sockets
        # only subscribe (an empty deque alone is ~600 B). The first _started are running or
        # committing (the pipeline); _starter is the callback that starts more.
        self._mutations: deque[_Entry] | None = None
        self._started = 0
        self._starter: asyncio.Handle | None = None
        # A successful response was sent and no Transition since (the client holds it).
        self._unresolved = False
        # A mutation that failed as it started: no later one starts until it is answered.
        self._barrier: _Entry | None = None
        self._actions: set[asyncio.Task[None]] | None = None
        # Results changed while a Transition could not be written (paused, or first runs).
        self._stale = False
        self._queued = False
        self._stalled_since: float | None = None
        self._dropped = False
        # The socket is not read while this socket's queue of mutations is full.
        self._reading_paused = False
        self._done = False
        # While a user token waits for its provider's keys: the messages after it, in order.
        self._held: list[tuple[str | bytes, int | None]] | None = None
        self._auth_task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        gateway.metrics.connections.inc()
        gateway.watchdog.add(self)

    # ----------------------------------------------------------------- socket callbacks

    def message_received(self, data: str | bytes, size: int | None = None) -> None:
        """Act on one complete WebSocket message (text as ``str``, binary as ``bytes``).

        Args:
            data: the message.
            size: its size in bytes on the wire, when the caller knows it (text as ``str``
                would otherwise be measured in characters).
        """
        began = time.perf_counter()
        self._last_received = asyncio.get_running_loop().time()
        if self._held is not None:
            self._held.append((data, size))
            if len(self._held) > _MAX_HELD_MESSAGES or (
                sum(len(d) if n is None else n for d, n in self._held)
                > self._gw.limits.max_message_bytes
            ):
                # Bounded in bytes too: 256 messages of the largest size were 2 GiB held.
                self._held = []
                self._fatal("Too many messages while the token is being checked")
            return
        proto = self._proto
        proto.receive_data(data, size)
        if proto.close_expected():
            if proto.protocol_error is not None and not self._done:
                _log_protocol_error(str(proto.protocol_error))
            self._send_data()
            return
        for event in proto.events_received():
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
            elif isinstance(event, Connected):
                self._connected = True
            if proto.close_expected() or self._held is not None:
                break
        self._run_pending(began)
        self._flush()
        self._send_data()

    def fail(self, error: str) -> None:
        """The client broke the protocol below the message level: FatalError, then close."""
        self._fatal(error)

    def shed(self, code: int, reason: str) -> None:
        """Close with ``code`` and ``reason`` and no ``FatalError``: not the client's fault (it
        is idle, or the server is overloaded), so the official clients reconnect and re-send
        what was unanswered, where a ``FatalError`` would stop them for good."""
        if self._done:
            return
        reason = reason[:_MAX_CLOSE_REASON]
        THROTTLE.log(log, "info", "closing a sync socket", code=code, reason=reason)
        self._finish()
        self._socket.close(code, reason)

    def pause_writing(self) -> None:
        """The transport's buffer is full: hold Transitions back until it drains."""
        self._stalled_since = asyncio.get_running_loop().time()

    def resume_writing(self) -> None:
        """The buffer drained: send ONE Transition from the latest results if any is due."""
        self._stalled_since = None
        if self._stale or self._proto.transition_due:
            self._flush()
            self._send_data()

    def connection_lost(self) -> None:
        """The socket is gone: release every subscription and stop this socket's work."""
        self._finish()

    # ----------------------------------------------------------------- engine, flusher, watchdog

    def query_stale(self, sub: _Sub) -> None:
        """``sub``'s result is out of date until its re-run off the loop ends: hold back."""
        if self._behind is None:
            self._behind = set()
        self._behind.add(sub)

    def query_updated(self, sub: _Sub | None = None) -> None:
        """A subscribed result changed (called synchronously by the engine after a commit), or
        a stale one is current again."""
        if sub is not None:
            self._caught_up(sub)
        if not self._queued and not self._done:
            self._queued = True
            self._gw.flusher.add(self)

    def flush_now(self, now: float, shared: SharedTransitions | None = None) -> None:
        """The flusher's callback: write the Transition now, sharing encodings in ``shared``."""
        self._queued = False
        self._flush(shared)
        # No close check: sending a Transition never ends the connection.

    def tick(self, now: float) -> None:
        """Called about once a second by the watchdog: drop stuck clients, keep idle ones alive,
        and close the ones that hold a place without using it."""
        if self._done:
            return
        late = self._overdue(now)
        if late is not None:
            self._gw.metrics.refused.labels("timeout").inc()
            if late.startswith("IdleTimeout"):
                # Not the client's fault (the official clients send nothing while they have
                # no query): a plain close, after which they reconnect when they need to.
                # A FatalError would stop them for good.
                self.shed(1001, late)
            else:
                self._fatal(late)
            return
        stalled = self._stalled_since
        if stalled is None:
            self._proto.tick(now)
            self._send_data()
            return
        timeout_s = self._gw.limits.client_send_timeout_s
        if now - stalled > timeout_s:
            self.drop("it stopped reading", timeout_s=timeout_s)

    def drop(self, why: str, **details: object) -> None:
        """Drop the client rather than buffer for it: it stopped reading, or the server holds
        too many unsent bytes. An abort, not a close: a polite close would wait on buffered
        data nobody reads."""
        if self._dropped:
            return
        self._dropped = True
        self._gw.metrics.dropped.inc()
        THROTTLE.log(log, "warning", "dropping a client", reason=why, **details)
        self._finish()
        self._socket.abort()

    def _overdue(self, now: float) -> str | None:
        """Why this socket is closed for taking too long, if it is."""
        limits = self._gw.limits
        partial = self.partial_since
        if (
            partial is not None
            and not self._reading_paused  # it cannot finish while we do not read
            and 0 < limits.message_timeout_s < now - partial
        ):
            return (
                f"MessageTimeout: a message stayed unfinished for over "
                f"{limits.message_timeout_s:g} s"
            )
        if not self._connected and 0 < limits.connect_timeout_s < now - self._opened_at:
            return f"ConnectTimeout: no Connect message within {limits.connect_timeout_s:g} s"
        idle = (
            not self._subs
            and not self._mutations
            and not self._actions
            and 0 < limits.idle_timeout_s < now - self._last_received
        )
        if idle:
            return f"IdleTimeout: no query and no message for {limits.idle_timeout_s:g} s"
        return None

    # ----------------------------------------------------------------- output

    def _flush(self, shared: SharedTransitions | None = None) -> None:
        """Queue and write the next Transition if one is due and the socket can take it."""
        if self._done:
            return
        # Responses first: a Transition must not show a write before its response (see the
        # mutations section), and it is the Transition after a response that resolves it.
        if self._mutations:
            self._answer_ready()
        self._transition(shared)

    def _transition(self, shared: SharedTransitions | None = None) -> bool:
        """Write the next Transition (after every frame queued before it) if one is due and
        can go out now; whether one went out."""
        if self._stalled_since is not None or self._pending or self._slow or self._behind:
            self._stale = True
            return False
        self._stale = False
        proto = self._proto
        if not proto.send_transition(self._gw.engine.ts, self._results(), shared=shared):
            return False
        send_text = self._socket.send_text
        for frame in proto.data_to_send():
            send_text(frame)
        if shared is None:
            self._gw.metrics.transitions.inc()
        else:  # in the flusher's fan-out (the only caller passing ``shared``): counted there
            self._gw.flusher.pushed += 1
        self._unresolved = False
        return True

    def _send_data(self) -> None:
        """Write every frame the core has queued; close the socket if the core says so."""
        proto = self._proto
        for frame in proto.data_to_send():
            self._socket.send_text(frame)
        if proto.close_expected() and not self._done:
            self._finish()
            # The backend closes these with a frame that has no status code; clients take 1000.
            self._socket.close(1000, "")

    def _results(self) -> dict[int, FunctionOutcome]:
        results: dict[int, FunctionOutcome] = {}
        for query_id, sub in self._subs.items():
            results[query_id] = sub.static if sub.static is not None else sub.query.result
        return results

    def _fatal(self, error: str) -> None:
        if self._proto.close_expected():
            return
        _log_protocol_error(error)
        self._proto.send_fatal_error(error)
        self._send_data()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self._proto.connection_lost()
        # Mutations already started are the engine's to finish (the outcome is logged for a
        # re-send); what is not started yet is dropped with the socket, as the client re-sends
        # it on its next connection.
        if self._starter is not None:
            self._starter.cancel()
            self._starter = None
        if self._expiry is not None:
            self._expiry.cancel()
        self._held = None
        for task in self._actions or ():
            task.cancel()
        self._mutations = None
        self._started = 0
        self._barrier = None
        self._pending = None
        for task in self._slow or ():
            task.cancel()
        self._slow = None
        self._behind = None
        if self._pacer is not None:
            self._pacer.cancel()
            self._pacer = None
        self._release_queries()
        self._gw.watchdog.discard(self)
        self._gw.metrics.connections.dec()
        if self._most_queries >= _BIG_QUERY_SET:
            self._gw.memory.soon()

    def _release_queries(self) -> None:
        """Unsubscribe every query of a closed socket, a work slice per loop turn: releasing
        2,000 at once held the loop ~45 ms (their results only go stale meanwhile; nothing is
        sent any more)."""
        deadline = time.perf_counter() + self._gw.limits.work_slice_s
        for query_id in list(self._subs):
            self._remove_query(query_id)
            if time.perf_counter() >= deadline and self._subs:
                asyncio.get_running_loop().call_soon(self._release_queries)
                return

    # ----------------------------------------------------------------- queries

    def _add_query(self, event: QueryAdded) -> None:
        self._gw.metrics.subscriptions.inc()
        sub = _Sub(self, event.query_id, event.udf_path, _NOT_DECODED, event.journal)
        sub.added = event
        self._subs[event.query_id] = sub
        if len(self._subs) > self._most_queries:
            self._most_queries = len(self._subs)
        self._defer(sub)

    def _defer(self, sub: _Sub) -> None:
        pending = self._pending
        if pending is None:
            pending = self._pending = deque()
        pending.append(sub)

    def _run_pending(self, began: float | None = None) -> None:
        """Run first subscriptions for up to one work slice, then yield the loop to the others.

        The rest continue on a later turn (later still if this client's address has used its
        query share); the Transition goes out once every query of the set has its result.

        Args:
            began: when the current callback began (``perf_counter``), if it did other work
                first (receiving the message): the slice counts from then, so that a large
                ``ModifyQuerySet``'s own validation and its first runs together stay within
                one slice.
        """
        self._pacer = None
        pending = self._pending
        if not pending or self._done:
            return
        gw = self._gw
        wait_s = gw.query_share.wait_s(self._address)
        loop = asyncio.get_running_loop()
        if wait_s > 0:
            self._pacer = loop.call_later(wait_s, self._resume_pending)
            return
        start = time.perf_counter()
        deadline = (start if began is None else began) + gw.limits.work_slice_s
        engine = gw.engine
        while pending:
            sub = pending.popleft()
            if self._subs.get(sub.query_id) is sub and sub.query is None:
                added = sub.added
                if added is not None:
                    sub.added = None
                    sub.args = added.args
                    if added.args_error is not None:
                        sub.static = failed_outcome(added.args_error)
                if sub.static is not None:
                    pass  # unusable arguments: their error is the result
                elif engine.runs_off_loop(sub.path):
                    self._subscribe_off_loop(sub)
                else:
                    self._subscribe(sub)
            if time.perf_counter() >= deadline:
                break
        spent = time.perf_counter() - start
        gw.query_share.charge(self._address, spent)
        if pending:
            # Rest as long as this slice ran before the next: resumed at once (call_soon),
            # every turn of the loop held a slice, and another client's push, which takes a
            # few turns (request, commit, re-run, write), waited a slice per turn: 60-100 ms
            # behind a 2,000-query set with no turn over 20 ms. Half the loop stays free.
            self._pacer = loop.call_later(spent, self._resume_pending)
        else:
            self._pending = None

    def _resume_pending(self) -> None:
        self._run_pending()
        if not self._pending and not self._done:
            self._flush()
            self._send_data()

    def _subscribe(self, sub: _Sub) -> None:
        try:
            sub.query = self._gw.engine.subscribe(
                sub.path, sub.args, self._identity, sub, journal=sub.journal
            )
            self._catch_up(sub)
        except Exception as exc:  # an engine bug must not take the socket down
            log.exception("subscribe failed", path=sub.path)
            sub.static = failed_outcome(f"InternalServerError: {type(exc).__name__}")

    def _subscribe_off_loop(self, sub: _Sub) -> None:
        """Subscribe ``sub``, whose function is known to be slow, with its first run off the
        event loop; the Transition waits for it like for any first run."""
        if self._slow is None:
            self._slow = set()
        task = asyncio.get_running_loop().create_task(self._subscribe_later(sub))
        self._slow.add(task)
        task.add_done_callback(self._slow_done)

    async def _subscribe_later(self, sub: _Sub) -> None:
        identity = self._identity
        query: Any = None
        try:
            query, spent = await self._gw.engine.subscribe_async(
                sub.path, sub.args, identity, sub, journal=sub.journal
            )
            self._gw.query_share.charge(self._address, spent)
        except Exception as exc:  # an engine bug must not take the socket down
            log.exception("subscribe failed", path=sub.path)
            sub.static = failed_outcome(f"InternalServerError: {type(exc).__name__}")
        if self._done or self._subs.get(sub.query_id) is not sub:
            if query is not None:  # removed (or the socket closed) meanwhile
                self._gw.engine.unsubscribe(query, sub)
            return
        sub.query = query
        self._catch_up(sub)
        if query is not None and identity is not self._identity:
            # Authenticated meanwhile: run it again under the new identity.
            self._caught_up(sub)
            self._gw.engine.unsubscribe(query, sub)
            sub.query = None
            self._defer(sub)
            if self._pacer is None:
                self._pacer = asyncio.get_running_loop().call_soon(self._resume_pending)

    def _catch_up(self, sub: _Sub) -> None:
        """``sub`` joined a shared query whose re-run is off the loop: wait for it too."""
        if getattr(sub.query, "stale", False):
            self.query_stale(sub)

    def _caught_up(self, sub: _Sub) -> None:
        behind = self._behind
        if behind is not None:
            behind.discard(sub)
            if not behind:
                self._behind = None

    def _slow_done(self, task: asyncio.Task[None]) -> None:
        slow = self._slow
        if slow is None:
            return
        slow.discard(task)
        if not slow:
            self._slow = None
            if not self._done and not self._pending:  # else the pacer flushes when done
                self._flush()
                self._send_data()

    def _remove_query(self, query_id: int) -> None:
        sub = self._subs.pop(query_id, None)
        if sub is None:
            return
        self._gw.metrics.subscriptions.dec()
        self._caught_up(sub)
        if sub.query is not None:
            self._gw.engine.unsubscribe(sub.query, sub)
            sub.query = None

    # ----------------------------------------------------------------- auth

    def _authenticate(self, event: AuthenticateRequested) -> None:
        gw = self._gw
        try:
            caller = gw.auth.websocket(event.token_type, event.value, event.acting_as)
        except AccessDenied as exc:
            self._proto.reject_auth(str(exc))
            return
        except KeysPending as pending:
            # Off the hot path: hold what follows until the keys arrive and decide then.
            self._held = []
            self._auth_task = asyncio.get_running_loop().create_task(
                self._authenticate_later(event, pending.fetch)
            )
            return
        self._accept(caller)

    async def _authenticate_later(
        self, event: AuthenticateRequested, fetch: asyncio.Future[None]
    ) -> None:
        await asyncio.shield(fetch)  # the fetch is shared: a closed socket must not cancel it
        if self._done:
            return
        try:
            caller = self._gw.auth.websocket(
                event.token_type, event.value, event.acting_as, fetch=False
            )
        except AccessDenied as exc:
            self._proto.reject_auth(str(exc))
        else:
            self._accept(caller)
        self._flush()
        self._send_data()
        held, self._held = self._held or [], None
        for i, (data, size) in enumerate(held):
            if self._done:
                return
            self.message_received(data, size)
            if self._held is not None:  # another Authenticate is waiting: keep the order
                self._held.extend(held[i + 1 :])
                return

    def _token_expired(self) -> None:
        self._expiry = None
        if not self._done:
            self._proto.expire_auth("Token expired")
            self._send_data()

    def _accept(self, caller: Caller) -> None:
        gw = self._gw
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if caller.expires_at is not None:
            # Convex ends a session whose token expires; clients re-authenticate.
            loop = asyncio.get_running_loop()
            delay = max(0.0, caller.expires_at - time.time())
            self._expiry = loop.call_later(delay, self._token_expired)
        self._identity = gw.identity_of(caller)
        # A new identity re-runs every query under it (paced like a new query set; queries
        # still waiting for their first run will run under the new identity anyway).
        for sub in self._subs.values():
            if sub.query is not None:
                self._caught_up(sub)
                gw.engine.unsubscribe(sub.query, sub)
                sub.journal = getattr(sub.query, "journal", sub.journal)
                sub.query = None
                self._defer(sub)
        self._proto.accept_auth()

    # ----------------------------------------------------------------- mutations
    #
    # Pipelined. Each mutation is run (by the engine, synchronously) as soon as the ones before
    # it have run, and its commit takes its place in the engine's commit order at once, while
    # the durable writes of those before it are still in flight: it sees their writes, and
    # commits or fails after them (the engine re-runs it if an earlier commit it was computed
    # on is refused, and fails it if one cannot be written). Responses go out in arrival
    # order, each once its commit is applied (durable, unless relaxed).
    #
    # What the official clients need (npm convex browser/sync, and the Rust client under the
    # PyPI one): a successful MutationResponse carries its commit ts, and the client resolves
    # the mutation only on a *later* Transition whose endVersion.ts is >= that ts. Hence the
    # rules this driver keeps:
    # 1. a response is sent only once its commit is applied (engine.ts >= its ts), so the
    #    Transition after it can carry its ts (the core refuses a Transition older than an
    #    answered mutation);
    # 2. every response is followed by a Transition (the core marks one due);
    # 3. no Transition at T goes out while a mutation of this socket whose commit is applied
    #    (ts <= T) is unanswered: that Transition would show the write before the client knows
    #    the mutation committed (its optimistic update applied twice) and the client would
    #    wait for yet another Transition. So every Transition is preceded by the responses
    #    that are ready (_answer_ready in _flush); a mutation not yet applied has a ts past
    #    engine.ts, so nothing it wrote is in the Transition.
    # The client's own order is kept because responses are sent in arrival order: one that is
    # ready waits for the ones before it. A failure carries no ts and clients resolve it on its
    # response, ahead of successes still waiting for their Transition: so a Transition goes
    # out between them (and the pipeline drains behind a mutation that fails as it starts, so
    # that this Transition holds no later write; _start_mutations).

    def _queue_mutation(self, event: MutationRequested) -> None:
        entries = self._mutations
        if entries is None:
            entries = self._mutations = deque()
        entries.append(_Entry(event, self._identity, self.read_at))
        if len(entries) >= self._gw.limits.max_pending_mutations and not self._reading_paused:
            # Backpressure, not an error: the official clients put no bound on the mutations
            # they send (a Promise.all of thousands). What was read already is queued (at
            # most one read's worth more); the rest waits in the kernel and the client's
            # buffers until half the queue is answered.
            self._reading_paused = True
            self._socket.pause_reading()
        if self._starter is None:
            # Run after this message's other events (e.g. its query set) have been acted on.
            self._starter = asyncio.get_running_loop().call_soon(self._start_mutations)

    def _start_mutations(self) -> None:
        """Run queued mutations in order, up to the pipeline depth, for one work slice."""
        self._starter = None
        entries = self._mutations
        if not entries or self._done or self._barrier is not None:
            return
        limits = self._gw.limits
        depth = min(len(entries), limits.max_mutations_in_flight)
        deadline = time.perf_counter() + limits.work_slice_s
        # The re-runs each commit triggers share this slice (the rest go to the next turn),
        # and a mutation starts only if one as long as the last still fits in it.
        with self._gw.engine.sharing_slice(deadline):
            while self._started < depth:
                began = time.perf_counter()
                entry = entries[self._started]
                self._gw.metrics.mutation_wait.observe(began - entry.read_at)
                self._started += 1
                future = entry.future = self._begin(entry)
                future.add_done_callback(self._mutation_done)
                if future.done() and not _succeeded(future):
                    # A failure is answered at once by clients, a success only on the
                    # Transition after it: for the client's promises to settle in the order
                    # sent, the failure's response must follow that Transition, and so no
                    # later mutation may commit before it is answered (its write would be in
                    # that Transition ahead of its response). The pipeline drains here
                    # (failures are rare).
                    self._barrier = entry
                    return
                ended = time.perf_counter()
                if ended + (ended - began) >= deadline:
                    break
        if self._started < depth:  # the slice is used: the rest behind what waited for it
            self._starter = call_after_waiting(self._start_mutations)

    def _begin(self, entry: _Entry) -> asyncio.Future[Any]:
        """Start ``entry``'s run (or find the run a re-send repeats): its outcome's future."""
        event, identity = entry.event, entry.identity
        if event.args_error is not None:
            return _done(failed_outcome(event.args_error))
        session = self._proto.session_id
        key = (session, event.request_id) if session else None
        log_ = self._gw.mutation_log
        call = _call_of(identity, event)
        if key is not None:
            try:
                previous = log_.get(key, call)
            except ReplayRejected as exc:
                return _done(failed_outcome(str(exc)))
            if previous is not None:
                return previous
        request = None
        if key is not None:
            # Also bound to the call, so a re-send reaching another node sharing the log
            # (which never saw this socket) finds the original in the engine's receipts.
            request = (
                key[0],
                key[1],
                hashlib.blake2b(repr(call).encode(), digest_size=16).digest(),
            )
        try:
            # The engine owns the run from here: if this socket dies, the outcome still
            # arrives in the log for the re-send on the client's next connection.
            future: asyncio.Future[Any] = self._gw.engine.start_mutation(
                event.udf_path, event.args, identity, request=request
            )
        except Exception as exc:  # an engine bug must not take the socket down
            log.exception("mutation crashed", path=event.udf_path)
            return _done(failed_outcome(f"InternalServerError: {type(exc).__name__}"))
        entry.own = True
        if key is not None:
            log_.put(key, call, future)
        return future

    def _mutation_done(self, future: asyncio.Future[Any]) -> None:
        if self._done:
            return
        if self._answer_ready():
            self._flush()
            self._send_data()

    def _answer_ready(self) -> bool:
        """Send the responses that are ready, in arrival order; whether any was sent."""
        entries = self._mutations
        if not entries:
            return False
        proto = self._proto
        answered = 0
        while entries:
            entry = entries[0]
            future = entry.future
            if future is None or not future.done():
                break
            outcome: Any
            if future.cancelled() or future.exception() is not None:
                outcome = failed_outcome("InternalServerError: the mutation was not answered")
            else:
                outcome = future.result()
            if (
                not outcome.success
                and self._unresolved
                and not _applied_behind(entries)
                and not self._transition()
            ):
                # Clients resolve a failure on its response but a success only on the next
                # Transition: that Transition goes first, so the client's promises still
                # settle in the order sent. It cannot go out now; _flush comes back here.
                # (Not when a later mutation is applied already: the Transition would show
                # its write before its response, rule 3, which matters more.)
                break
            entries.popleft()
            self._started -= 1
            answered += 1
            if entry is self._barrier:
                self._barrier = None
            ts = getattr(outcome, "ts", None) if outcome.success else None
            if outcome.success:
                self._unresolved = True
                if entry.own:
                    self._gw.metrics.commits.inc()
            proto.send_mutation_response(entry.event.request_id, outcome, ts)
        if self._reading_paused and len(entries) <= self._gw.limits.max_pending_mutations // 2:
            self._reading_paused = False
            self._socket.resume_reading()
        if not entries:
            self._mutations = None
        elif answered and self._starter is None and self._started < len(entries):
            self._starter = asyncio.get_running_loop().call_soon(self._start_mutations)
        return answered > 0

    # ----------------------------------------------------------------- actions

    def _start_action(self, event: ActionRequested) -> None:
        actions = self._actions
        if actions is None:
            actions = self._actions = set()
        if len(actions) >= self._gw.limits.max_concurrent_actions:
            self._proto.send_action_response(
                event.request_id, failed_outcome("TooManyConcurrentRequests: too many actions")
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
        if not self._proto.close_expected():
            self._proto.send_action_response(event.request_id, outcome)
            self._flush()
            self._send_data()


def _call_of(identity: Any, event: MutationRequested) -> tuple[str, str, bytes]:
    """What a re-send must repeat to be the same call: caller, function and arguments."""
    from marketpulse.reactive.values import value_to_json

    encoded = event.args_json
    if encoded is None:
        try:
            encoded = orjson.dumps(value_to_json(event.args), option=orjson.OPT_SORT_KEYS)
        except Exception:  # args that do not encode cannot be replayed either
            encoded = repr(event.args).encode()
    who = str(getattr(identity, "key", identity))
    return who, event.udf_path, hashlib.blake2b(encoded, digest_size=16).digest()
