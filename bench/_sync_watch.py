"""A subscriber as a socket has it, without the socket: a real sync protocol core
(``SyncProtocol``) that subscribed one query, for in-process benchmarks that encode the
Transitions a fan-out would write. Imports marketpulse only when called, so that a
``--before`` child can put another checkout's ``src`` first."""

from __future__ import annotations

import json
from typing import Any


class Subscriber:
    """One socket's protocol core and its one subscription (query id 0)."""

    def __init__(self, protocol: Any, dirty: dict[Any, None]) -> None:
        self.protocol = protocol
        self.dirty = dirty
        self.query: Any = None

    def on_query_updated(self, query: Any) -> None:
        self.dirty[self] = None

    def push(self, ts: int, shared: dict[Any, Any]) -> int:
        """Encode this subscriber's Transition, as the fan-out does; the bytes it would write."""
        if not self.protocol.send_transition(ts, {0: self.query.result}, shared=shared):
            return 0
        return sum(len(frame) for frame in self.protocol.data_to_send())


def subscribe(
    engine: Any, session: str, udf: str, args: dict[str, Any], dirty: dict[Any, None]
) -> Subscriber:
    """A connected protocol core that added ``udf(args)``, subscribed on ``engine`` and sent its
    first Transition (drained): later pushes are the updates alone."""
    from marketpulse.reactive.engine import Identity
    from marketpulse.reactive.sync.protocol import SyncProtocol

    proto = SyncProtocol()
    proto.receive_data(json.dumps({"type": "Connect", "sessionId": session, "connectionCount": 0}))
    add = {"type": "Add", "queryId": 0, "udfPath": udf, "args": [args]}
    proto.receive_data(
        json.dumps(
            {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [add]}
        )
    )
    assert proto.protocol_error is None, proto.protocol_error
    proto.events_received()
    sub = Subscriber(proto, dirty)
    sub.query = engine.subscribe(udf, args, Identity.anonymous(), sub)
    proto.send_transition(engine.ts, {0: sub.query.result})
    proto.data_to_send()
    return sub
