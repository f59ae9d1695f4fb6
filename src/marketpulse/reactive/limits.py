"""The store's limits, each declared once.

Two different bounds, enforced in two places: :class:`RunLimits` bound one function run (the
engine enforces them) and :class:`ConnectionLimits` bound one client connection (the sync
WebSocket and the HTTP API enforce them). ``marketpulse serve``'s defaults are these values.
This module imports nothing heavy, so the CLI can read it before the server loads.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConnectionLimits", "RunLimits"]


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
    """

    query_time_limit: float = 1.0
    mutation_time_limit: float = 1.0
    action_time_limit: float = 600.0
    max_result_bytes: int = 8 * 1024 * 1024
    max_log_lines: int = 256


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds on one client connection (the engine bounds each run itself: :class:`RunLimits`).

    Attributes:
        max_message_bytes: largest message a client may send; a bigger one is answered with a
            ``MessageTooLarge`` FatalError.
        client_send_timeout_s: a client whose socket takes nothing for this long is dropped.
        ping_interval_s: a socket quiet for this long gets a protocol Ping.
        max_pending_mutations: mutations queued on one socket before it is closed.
        max_concurrent_actions: actions running for one socket before more are refused.
    """

    max_message_bytes: int = 8 * 1024 * 1024
    client_send_timeout_s: float = 30.0
    ping_interval_s: float = 15.0
    max_pending_mutations: int = 1024
    max_concurrent_actions: int = 64

    @property
    def max_frame_bytes(self) -> int:
        """The WebSocket layer's cap: twice the message limit.

        A message between the two reaches the sync protocol and gets its ``MessageTooLarge``
        FatalError; beyond it the WebSocket layer closes with 1009 before buffering it all.
        """
        return 2 * self.max_message_bytes
