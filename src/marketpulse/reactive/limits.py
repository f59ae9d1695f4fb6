"""The store's limits, each declared once.

Two different bounds, enforced in two places: :class:`RunLimits` bound one function run (the
engine enforces them) and :class:`ConnectionLimits` bound one client connection (the sync
WebSocket and the HTTP API enforce them). ``marketpulse serve``'s defaults are these values.
This module imports nothing heavy, so the CLI can read it before the server loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SERVE_LIMITS", "ConnectionLimits", "JsonTooDeep", "RunLimits", "check_json_depth"]


@dataclass(frozen=True)
class RunLimits:
    """Bounds on one function run.

    Attributes:
        query_time_limit: seconds a query may run (checked on every db operation, and by the
            engine's deadline watchdog inside pure-CPU loops).
        mutation_time_limit: seconds a mutation may run (same checks).
        action_time_limit: seconds an action may run (enforced with ``asyncio.timeout``).
        max_result_bytes: largest encoded JSON result a function may return.
        max_log_lines: log lines kept per run (more are counted, then dropped).
        inline_query_s: a one-shot query function whose run took longer than this runs on
            the engine's off-loop worker from then on, so it cannot hold the event loop
            (``serve`` sets it to ``work_slice_s``).
    """

    query_time_limit: float = 1.0
    mutation_time_limit: float = 1.0
    action_time_limit: float = 600.0
    max_result_bytes: int = 8 * 1024 * 1024
    max_log_lines: int = 256
    inline_query_s: float = 0.005


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds on what clients may make the server hold or do (the engine bounds each run
    itself: :class:`RunLimits`). Every field is a ``serve`` flag and a ``MARKETPULSE_*``
    variable of the same name (docs/operations.md); 0 turns a count limit off.

    Attributes:
        max_connections: open TCP connections, all clients together (also capped below the
            process's file-descriptor limit at start); more are answered 503 and closed.
        max_connections_per_client: open connections from one client address.
        header_timeout_s: seconds from accept (or the end of the previous request) to a
            complete request head; this covers the WebSocket handshake, which completes with
            the upgrade request's head.
        body_timeout_s: seconds an HTTP request body may take to arrive.
        connect_timeout_s: seconds from the WebSocket upgrade to the client's ``Connect``.
        message_timeout_s: seconds an unfinished WebSocket message (a partial frame or
            fragments) may stay unfinished.
        idle_timeout_s: a sync socket with no query, no request in flight and nothing received
            for this long is closed (1001, no ``FatalError``: the client may reconnect).
        max_message_bytes: largest message a client may send, in bytes (all fragments
            together); a bigger one is answered with a ``MessageTooLarge`` FatalError.
        max_fragments: frames one WebSocket message may be split into.
        max_partial_bytes: bytes of unfinished WebSocket messages the whole server holds; the
            sockets holding the most are closed (1013, try again later) until within it.
        max_header_bytes: largest HTTP request head.
        max_body_bytes: largest HTTP request body (413).
        max_json_depth: deepest nesting of arrays and objects in a client's JSON.
        max_batch_queries: queries in one ``/api/query_batch``.
        max_queries: queries in one sync socket's query set.
        max_query_changes: modifications in one ``ModifyQuerySet`` (a reconnecting client
            re-sends its whole set in one, so keep it at least ``max_queries``).
        max_query_set_bytes: bytes of arguments (as JSON) of one sync socket's queries
            together; the store holds them for as long as the queries stay subscribed.
        max_pending_mutations: mutations queued on one socket before it is no longer read
            (until half of them are answered).
        max_mutations_in_flight: mutations of one socket run ahead of their responses (the
            pipeline's depth: run, their commits waiting for their durable write); the rest of
            its queue waits to run. 1 runs a socket's mutations one at a time.
        max_concurrent_actions: actions running for one socket before more are refused.
        work_slice_s: how long one socket's first query runs may hold the event loop in one
            turn before yielding to everyone else.
        client_query_share: seconds of query run time per second one client address may use
            before its further runs wait (its burst allowance is one second's share, at least
            ``work_slice_s``).
        client_send_timeout_s: a client whose socket takes nothing for this long is dropped.
        max_unsent_bytes: bytes written to clients and not yet taken by them, server-wide; past
            it the connections holding the most are dropped, largest first.
        ping_interval_s: a socket quiet for this long gets a protocol Ping.
    """

    max_connections: int = 10_000
    max_connections_per_client: int = 1_000
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    message_timeout_s: float = 30.0
    idle_timeout_s: float = 120.0
    max_message_bytes: int = 8 * 1024 * 1024
    max_fragments: int = 1024
    max_partial_bytes: int = 256 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 8 * 1024 * 1024
    max_json_depth: int = 64
    max_batch_queries: int = 256
    max_queries: int = 2_000
    max_query_changes: int = 2_000
    max_query_set_bytes: int = 8 * 1024 * 1024
    max_pending_mutations: int = 1024
    max_mutations_in_flight: int = 256
    max_concurrent_actions: int = 64
    work_slice_s: float = 0.005
    client_query_share: float = 0.5
    client_send_timeout_s: float = 30.0
    max_unsent_bytes: int = 256 * 1024 * 1024
    ping_interval_s: float = 15.0

    @property
    def max_frame_bytes(self) -> int:
        """The WebSocket layer's cap: twice the message limit.

        A message between the two reaches the sync protocol and gets its ``MessageTooLarge``
        FatalError; beyond it the WebSocket layer closes with 1009 before buffering it all.
        """
        return 2 * self.max_message_bytes


SERVE_LIMITS: tuple[str, ...] = (
    "max_connections",
    "max_connections_per_client",
    "header_timeout_s",
    "body_timeout_s",
    "connect_timeout_s",
    "message_timeout_s",
    "idle_timeout_s",
    "max_fragments",
    "max_partial_bytes",
    "max_unsent_bytes",
    "max_header_bytes",
    "max_body_bytes",
    "max_json_depth",
    "max_batch_queries",
    "max_queries",
    "max_query_changes",
    "max_query_set_bytes",
    "max_pending_mutations",
    "max_mutations_in_flight",
    "max_concurrent_actions",
    "work_slice_s",
    "client_query_share",
)
"""The :class:`ConnectionLimits` fields ``serve`` exposes one for one (flag and env var of the
same name); ``max_message_bytes`` and ``client_send_timeout_s`` predate this list and keep
their own flags."""


_JSON_SCALARS = frozenset({str, float, int, bool, type(None)})
_CONTAINERS = (dict, list)


class JsonTooDeep(ValueError):
    """A client's JSON nests deeper than ``max_json_depth``."""


def check_json_depth(value: object, max_depth: int) -> None:
    """Raise :class:`JsonTooDeep` if ``value`` nests arrays/objects deeper than ``max_depth``.

    Iterative, so a hostile document cannot reach Python's recursion limit here, and run before
    any recursive decoder sees the value.
    """
    # Level by level: no tuple per value, and the containers of each level are found by one
    # comprehension (2,000 query modifications: a third of the time of a (value, depth) stack).
    level: list[Any] = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels")
        # Most children are scalars: an exact-type set lookup rules them out before the
        # isinstance test (a union type's isinstance is slow); a 200-market batch walks in
        # about half the time.
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if type(child) not in _JSON_SCALARS and isinstance(child, _CONTAINERS)
        ]
