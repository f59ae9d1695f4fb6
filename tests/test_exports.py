"""Each public package's exports, pinned: ``__all__`` is exact, resolves, and is complete.

As httpx's ``tests/test_exported_members.py`` and websockets' ``tests/test_exports.py`` do:
a change to a package's public names is a deliberate edit of this file.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from types import ModuleType

import pytest

EXPORTS: dict[str, list[str]] = {
    "marketpulse": ["__version__"],
    "marketpulse.dashboard": ["STATIC_DIR", "static_dir"],
    "marketpulse.kalshi": [
        "BookError",
        "BookInvalidated",
        "BookUpdated",
        "Candlestick",
        "CommandBuilder",
        "DEMO_REST_URL",
        "DEMO_WS_URL",
        "ERROR_TEXTS",
        "ErrorCode",
        "ErrorMessage",
        "Event",
        "EventLifecycle",
        "EventsPage",
        "FeedEvent",
        "FeedState",
        "FeedStats",
        "InvalidBook",
        "KalshiAuthError",
        "KalshiCredentials",
        "KalshiFeed",
        "KalshiProtocol",
        "KalshiRestClient",
        "KalshiRestError",
        "MalformedMessage",
        "Market",
        "MarketLifecycle",
        "MarketsPage",
        "OkMessage",
        "OrderBook",
        "Orderbook",
        "OrderbookDelta",
        "OrderbookSnapshot",
        "OtherMessage",
        "PROD_REST_URL",
        "PROD_WS_URL",
        "PriceRange",
        "ProtocolStats",
        "RecoveryFailed",
        "RecoveryStarted",
        "RestTrade",
        "SequenceGap",
        "Series",
        "ServerMessage",
        "SubscribedMessage",
        "TickerMessage",
        "TokenBucket",
        "TradeMessage",
        "TradesPage",
        "UnknownMessage",
        "UnsubscribedMessage",
        "generate_private_key_pem",
        "load_public_key",
        "parse_message",
        "resolve_rest_url",
        "resolve_ws_url",
        "signing_message",
        "verify_headers",
        "verify_signature",
    ],
    "marketpulse.marketdata": ["RESULT_SCHEMAS", "marketData", "schema"],
    "marketpulse.pipeline": [
        "HealthReport",
        "KalshiStreamWorkflow",
        "MarketSet",
        "MarketsChange",
        "StreamConfig",
        "TASK_QUEUE",
        "WorkflowStatus",
    ],
    "marketpulse.reactive": [
        "ActionCtx",
        "ArgumentValidationError",
        "ConvexError",
        "Crons",
        "FunctionModule",
        "FunctionSpec",
        "Int64",
        "MutationCtx",
        "PaginationOptions",
        "PaginationResult",
        "QueryCtx",
        "Schema",
        "Table",
    ],
    "marketpulse.reactive.auth": [
        "AuthConfig",
        "AuthConfigError",
        "DevIssuer",
        "InvalidToken",
        "KeysPending",
        "Provider",
        "SigningKey",
        "TokenVerifier",
        "VerifiedToken",
        "load_auth_config",
    ],
    "marketpulse.reactive.codegen": [
        "API_JS",
        "FunctionInfo",
        "GeneratedApi",
        "TypeMapper",
        "args_type",
        "describe_modules",
        "generate",
        "render",
        "schema_to_ts",
    ],
    "marketpulse.reactive.engine": [
        "ActionCtx",
        "ActionScheduler",
        "Auth",
        "CommitTimings",
        "DatabaseReader",
        "DatabaseWriter",
        "Engine",
        "FunctionResult",
        "Identity",
        "IndexRange",
        "MutationCtx",
        "Query",
        "QueryCtx",
        "QueryListener",
        "Scheduler",
        "SchedulerRunner",
        "SharedQuery",
        "SystemReader",
    ],
    "marketpulse.reactive.persistence": [
        "Commit",
        "CommitConflict",
        "DocumentWrite",
        "HealthCheck",
        "NodeLiveness",
        "Persistence",
        "PersistenceError",
        "PostgresPersistence",
        "RECEIPT_AGE_NS",
        "RECEIPT_MAX",
        "Readiness",
        "ReadinessCheck",
        "Receipt",
        "SharedLog",
        "Snapshot",
        "SqlitePersistence",
        "UnsafeDatabase",
        "WriteNow",
        "database_kind",
        "open_persistence",
        "shown_url",
        "sqlite_path",
    ],
    "marketpulse.reactive.sync": [],
    "marketpulse.simulator": ["FaultSettings", "Faults", "Simulator", "SimulatorConfig"],
    "marketpulse.testing": [
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
    ],
}


def foreign_imports(package: ModuleType) -> set[str]:
    """Names the package's ``__init__`` imports from outside itself (typing, helpers...)."""
    assert package.__file__ is not None
    tree = ast.parse(Path(package.__file__).read_text(encoding="utf-8"))
    name = package.__name__

    def inside(module: str | None, level: int) -> bool:
        return level > 0 or module == name or (module or "").startswith(name + ".")

    foreign = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not inside(node.module, node.level):
            foreign |= {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            foreign |= {
                alias.asname or alias.name.partition(".")[0]
                for alias in node.names
                if not inside(alias.name, 0)
            }
    return foreign


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_all_is_pinned(name: str) -> None:
    package = importlib.import_module(name)
    assert len(set(package.__all__)) == len(package.__all__), "a name is listed twice"
    assert sorted(package.__all__) == EXPORTS[name]


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_every_exported_name_resolves(name: str) -> None:
    package = importlib.import_module(name)
    missing = [member for member in package.__all__ if not hasattr(package, member)]
    assert missing == []


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_every_public_name_is_exported(name: str) -> None:
    package = importlib.import_module(name)
    foreign = foreign_imports(package)
    public = {
        member
        for member in dir(package)
        if not member.startswith("_")
        and member not in foreign
        and not isinstance(getattr(package, member), ModuleType)
    }
    assert sorted(public - set(package.__all__)) == []
