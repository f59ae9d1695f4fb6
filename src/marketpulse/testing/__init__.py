"""Test harness: the real processes of marketpulse, started and stopped for tests and benchmarks.

Each process class starts its child on free ports, returns once the child is ready (or raises
with the end of the child's log), stops it with its whole process group, and is a context
manager. A child never outlives the test (or benchmark) that started it, even a killed one.
``marketpulse dev`` starts the same classes.

    from marketpulse.testing import AdminClient, StoreProcess

    with StoreProcess(tmp_path / "store.sqlite", functions="my_app.functions") as store:
        AdminClient(store.url, store.admin_key).mutation("items:add", {"name": "x"})
"""

from marketpulse._admin_key import new_admin_key
from marketpulse._balancer import BalancerProcess
from marketpulse._components import (
    ChildProcess,
    SimulatorProcess,
    StoreProcess,
    TemporalProcess,
    WorkerProcess,
)
from marketpulse._process import ManagedProcess, free_port, http_ok, port_open
from marketpulse.testing._client import AdminClient, AsyncAdminClient, FunctionError
from marketpulse.testing._dev import DevProcess
from marketpulse.testing._feed import FeedMarket, SyntheticFeed
from marketpulse.testing._issuer import JwtIssuer
from marketpulse.testing._postgres import PostgresProcess
from marketpulse.testing._relay import TcpRelay
from marketpulse.testing._stats import percentile, summarize_ms
from marketpulse.testing._system import Book, LocalSystem, Streaming, canonical_book
from marketpulse.testing._watch import BookWatch, missing_trades, wait_for_trades
from marketpulse.testing._webhook import WebhookReceiver

__all__ = [
    "AdminClient",
    "AsyncAdminClient",
    "BalancerProcess",
    "Book",
    "BookWatch",
    "ChildProcess",
    "DevProcess",
    "FeedMarket",
    "FunctionError",
    "JwtIssuer",
    "LocalSystem",
    "ManagedProcess",
    "PostgresProcess",
    "SimulatorProcess",
    "StoreProcess",
    "Streaming",
    "SyntheticFeed",
    "TcpRelay",
    "TemporalProcess",
    "WebhookReceiver",
    "WorkerProcess",
    "canonical_book",
    "free_port",
    "http_ok",
    "missing_trades",
    "new_admin_key",
    "percentile",
    "port_open",
    "summarize_ms",
    "wait_for_trades",
]
