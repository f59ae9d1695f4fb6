"""The Convex sync protocol: server side and a light client, one module each.

:mod:`~marketpulse.reactive.sync.protocol` is the sans-I/O state machine of one connection,
:mod:`~marketpulse.reactive.sync.connection` drives it against the engine,
:mod:`~marketpulse.reactive.sync.websocket` is its asyncio socket, and
:mod:`~marketpulse.reactive.sync.client` is the light client the worker, tests and benchmarks
use. The package itself exports nothing, so importing the client loads none of the server.
"""

__all__: list[str] = []
