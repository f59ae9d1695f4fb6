"""Commands of the pipeline: ``worker``, ``stream ...`` and ``dev``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Coroutine
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

__all__ = ["register"]

_TEMPORAL_HELP = "Temporal frontend address host:port."
_DEFAULT_TEMPORAL = "127.0.0.1:7233"
_DEFAULT_ID = "kalshi-stream"
_Temporal = Annotated[str, typer.Option(help=_TEMPORAL_HELP)]
_Namespace = Annotated[str, typer.Option(help="Temporal namespace.")]
_WorkflowId = Annotated[str, typer.Option("--id", help="Workflow id.")]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _run_then_exit(coro: Coroutine[Any, Any, None]) -> NoReturn:
    """Run a one-shot Temporal client command and end the process right after.

    Skips interpreter finalization: temporalio's Rust runtime threads can still be calling
    into Python then, which crashes the process (PyGILState_Release) after its work is done.
    """
    code = 0
    try:
        asyncio.run(coro)
    except typer.Exit as exc:
        code = exc.exit_code
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out += [p for p in v.replace(",", " ").split() if p]
    return out


def worker(
    temporal: _Temporal = _DEFAULT_TEMPORAL,
    store: Annotated[str, typer.Option(help="Store base URL.")] = "http://127.0.0.1:3210",
    exchange: Annotated[
        str, typer.Option(help="Default exchange: sim | demo | prod | base URL.")
    ] = "sim",
    namespace: _Namespace = "default",
    metrics_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Serve Prometheus /metrics on this port (0: any)."),
    ] = None,
    alert_webhook: Annotated[
        str | None,
        typer.Option(help="POST alerts as JSON here (default: MARKETPULSE_ALERT_WEBHOOK)."),
    ] = None,
    flush_ms: Annotated[float, typer.Option(help="Longest a batch waits while busy (ms).")] = 5.0,
    lease_ms: Annotated[
        float,
        typer.Option(
            min=500,
            max=60_000,
            help="The stream's lease in the store (ms): books go stale this long after the "
            "feed was last heard from.",
        ),
    ] = 3000.0,
    batches_in_flight: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="applyUpdates batches sent ahead of the store's answers, at most (1: each "
            "waits for the one before).",
        ),
    ] = 2,
    graceful_timeout: Annotated[
        float, typer.Option(help="Seconds a draining worker waits for activities.")
    ] = 10.0,
    connect_timeout: Annotated[
        float, typer.Option(help="Seconds to keep retrying while Temporal is not ready.")
    ] = 60.0,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    json_logs: Annotated[bool, typer.Option("--json-logs", help="JSON log lines.")] = False,
) -> None:
    """Run the market-data worker (admin key from MARKETPULSE_ADMIN_KEY; SIGTERM drains)."""
    from datetime import timedelta

    from marketpulse.pipeline._exchange import resolve_exchange
    from marketpulse.pipeline._logging import configure_logging
    from marketpulse.pipeline.activities import WorkerSettings
    from marketpulse.pipeline.worker import run_worker

    admin_key = os.environ.get("MARKETPULSE_ADMIN_KEY", "").strip()
    if not admin_key:
        _fail("MARKETPULSE_ADMIN_KEY is not set (the store's admin key)")
    try:
        resolve_exchange(exchange)
    except ValueError as exc:
        _fail(str(exc))
    configure_logging(log_level, json=json_logs)
    settings = WorkerSettings(
        store_url=store,
        admin_key=admin_key,
        exchange=exchange,
        alert_webhook=alert_webhook or os.environ.get("MARKETPULSE_ALERT_WEBHOOK") or None,
        flush_window=max(0.0, flush_ms) / 1000.0,
        lease_ms=lease_ms,
        batches_in_flight=batches_in_flight,
    )
    _run_then_exit(
        run_worker(
            settings,
            temporal=temporal,
            namespace=namespace,
            metrics_port=metrics_port,
            graceful_shutdown_timeout=timedelta(seconds=graceful_timeout),
            connect_timeout=connect_timeout,
        )
    )


stream_app = typer.Typer(help="Start and control the stream workflow.", no_args_is_help=True)


async def _client(temporal: str, namespace: str) -> Any:
    from temporalio.client import Client

    try:
        return await Client.connect(temporal, namespace=namespace)
    except RuntimeError as exc:
        _fail(f"cannot reach Temporal at {temporal}: {exc}")


@stream_app.command("start")
def stream_start(
    markets: Annotated[list[str] | None, typer.Argument(help="Market tickers.")] = None,
    workflow_id: _WorkflowId = _DEFAULT_ID,
    exchange: Annotated[str, typer.Option(help="sim | demo | prod | URL ('' = worker's).")] = "",
    orderbook: Annotated[bool, typer.Option(help="Stream order books.")] = True,
    trades: Annotated[bool, typer.Option(help="Stream trades.")] = True,
    prices: Annotated[bool, typer.Option(help="Stream prices.")] = True,
    reconnect_delay: Annotated[float, typer.Option(help="Seconds.")] = 5.0,
    health_check_interval: Annotated[float, typer.Option(help="Seconds.")] = 30.0,
    cleanup_interval: Annotated[float, typer.Option(help="Seconds.")] = 3600.0,
    stale_after: Annotated[float, typer.Option(help="Seconds without data (0: off).")] = 300.0,
    temporal: _Temporal = _DEFAULT_TEMPORAL,
    namespace: _Namespace = "default",
) -> None:
    """Start KalshiStreamWorkflow (task queue market-data)."""
    from marketpulse.pipeline.config import TASK_QUEUE, StreamConfig
    from marketpulse.pipeline.workflow import KalshiStreamWorkflow

    try:
        cfg = StreamConfig(
            markets=_split(markets),
            enableOrderbook=orderbook,
            enableTrades=trades,
            enablePrices=prices,
            reconnectDelay=reconnect_delay,
            healthCheckInterval=health_check_interval,
            cleanupInterval=cleanup_interval,
            staleAfter=stale_after,
            exchange=exchange,
        ).validated()
    except ValueError as exc:
        _fail(str(exc))

    async def go() -> None:
        from temporalio.exceptions import WorkflowAlreadyStartedError

        client = await _client(temporal, namespace)
        try:
            handle = await client.start_workflow(
                KalshiStreamWorkflow.run, cfg, id=workflow_id, task_queue=TASK_QUEUE
            )
        except WorkflowAlreadyStartedError:
            _fail(f"workflow {workflow_id} is already running")
        typer.echo(f"started {workflow_id} run {handle.result_run_id} ({len(cfg.markets)} markets)")

    _run_then_exit(go())


def _change(workflow_id: str, add: list[str], remove: list[str], temporal: str, ns: str) -> None:
    from temporalio.client import WorkflowUpdateFailedError

    from marketpulse.pipeline.config import MarketsChange
    from marketpulse.pipeline.workflow import KalshiStreamWorkflow

    async def go() -> None:
        client = await _client(temporal, ns)
        handle = client.get_workflow_handle_for(KalshiStreamWorkflow.run, workflow_id)
        try:
            result = await handle.execute_update(
                KalshiStreamWorkflow.update_markets, MarketsChange(add=add, remove=remove)
            )
        except WorkflowUpdateFailedError as exc:
            _fail(f"refused: {exc.cause}")
        typer.echo(f"{len(result.markets)} markets (version {result.version})")

    _run_then_exit(go())


@stream_app.command("add-markets")
def stream_add(
    markets: Annotated[list[str], typer.Argument(help="Market tickers.")],
    workflow_id: _WorkflowId = _DEFAULT_ID,
    temporal: _Temporal = _DEFAULT_TEMPORAL,
    namespace: _Namespace = "default",
) -> None:
    """Add markets to a running stream (live; other markets keep their subscriptions)."""
    _change(workflow_id, _split(markets), [], temporal, namespace)


@stream_app.command("remove-markets")
def stream_remove(
    markets: Annotated[list[str], typer.Argument(help="Market tickers.")],
    workflow_id: _WorkflowId = _DEFAULT_ID,
    temporal: _Temporal = _DEFAULT_TEMPORAL,
    namespace: _Namespace = "default",
) -> None:
    """Remove markets from a running stream."""
    _change(workflow_id, [], _split(markets), temporal, namespace)


@stream_app.command("status")
def stream_status(
    workflow_id: _WorkflowId = _DEFAULT_ID,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    temporal: _Temporal = _DEFAULT_TEMPORAL,
    namespace: _Namespace = "default",
) -> None:
    """Show the workflow's status and the stream activity's live counters."""
    from marketpulse.pipeline.workflow import KalshiStreamWorkflow

    async def go() -> dict[str, Any]:
        from temporalio.service import RPCError

        client = await _client(temporal, namespace)
        handle = client.get_workflow_handle_for(KalshiStreamWorkflow.run, workflow_id)
        try:
            status = await handle.query(KalshiStreamWorkflow.status)
        except RPCError as exc:
            _fail(f"{workflow_id}: {exc.message}")
        out: dict[str, Any] = {"workflow": asdict(status), "stream": None}
        desc = await handle.describe()
        for pa in desc.raw_description.pending_activities:
            if pa.activity_type.name == "kalshi_stream" and pa.heartbeat_details.payloads:
                details = client.data_converter.payload_converter.from_payloads(
                    list(pa.heartbeat_details.payloads)
                )
                out["stream"] = {"attempt": pa.attempt, **(details[-1] if details else {})}
        return out

    async def show() -> None:
        _print_status(await go(), as_json)

    _run_then_exit(show())


def _print_status(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    wf = data["workflow"]
    typer.echo(f"workflow   {wf['workflowId']} ({wf['state']}, run {wf['runId']})")
    typer.echo(f"markets    {len(wf['markets'])}: {' '.join(wf['markets'][:20])}")
    typer.echo(
        f"starts     {wf['streamStarts']}  health restarts {wf['healthRestarts']}  "
        f"continued-as-new {wf['continuedAsNew']}  history {wf['historyLength']} events"
    )
    s = data["stream"]
    if s:
        typer.echo(
            f"stream     {s.get('state')} attempt {s.get('attempt')}  messages {s.get('messages')}  "
            f"batches {s.get('batches')}  reconnects {s.get('reconnects')}  gaps {s.get('gaps')}"
        )


@stream_app.command("stop")
def stream_stop(
    workflow_id: _WorkflowId = _DEFAULT_ID,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for it to finish.")] = 30.0,
    temporal: _Temporal = _DEFAULT_TEMPORAL,
    namespace: _Namespace = "default",
) -> None:
    """Stop the stream (its books are marked unservable) and complete the workflow."""
    from marketpulse.pipeline.workflow import KalshiStreamWorkflow

    async def go() -> None:
        client = await _client(temporal, namespace)
        handle = client.get_workflow_handle_for(KalshiStreamWorkflow.run, workflow_id)
        await handle.signal(KalshiStreamWorkflow.stop)
        try:
            async with asyncio.timeout(timeout):
                result = await handle.result()
        except TimeoutError:
            _fail(f"{workflow_id} did not stop within {timeout:.0f}s")
        typer.echo(f"stopped {workflow_id} ({len(result.markets)} markets)")

    _run_then_exit(go())


def dev(
    data_dir: Annotated[
        Path, typer.Option(help="State: Temporal db, store SQLite, key, logs.")
    ] = Path(".marketpulse"),
    port: Annotated[int, typer.Option(min=1, max=65535, help="Store / dashboard port.")] = 3210,
    temporal_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Temporal frontend port.")
    ] = 7233,
    temporal_ui_port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Temporal web UI port (default: temporal port + 1000)."
        ),
    ] = None,
    simulator_port: Annotated[int, typer.Option(min=1, max=65535, help="Simulator port.")] = 8765,
    exchange: Annotated[str, typer.Option(help="sim | demo | prod.")] = "sim",
    markets: Annotated[
        list[str] | None, typer.Option("--market", help="Markets (default: the exchange's).")
    ] = None,
    sim_markets: Annotated[int, typer.Option(min=1, help="Simulated markets.")] = 20,
    sim_rate: Annotated[float, typer.Option(min=0, help="Simulator messages/s.")] = 50.0,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 1,
    metrics_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Worker /metrics port.")
    ] = None,
    alert_webhook: Annotated[str | None, typer.Option(help="Alert webhook URL.")] = None,
    ready_file: Annotated[
        Path | None, typer.Option(help="Write addresses here once up (for scripts).")
    ] = None,
    auth_config: Annotated[
        str | None,
        typer.Option(help="Auth providers (Convex auth.config, JSON/TOML); off: dev sign-in."),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(help="Store database URL (postgresql://...); default: SQLite in data-dir."),
    ] = None,
    store_nodes: Annotated[
        int,
        typer.Option(help="Run N store nodes on --db (PostgreSQL) behind HAProxy on --port."),
    ] = 0,
) -> None:
    """Run everything: Temporal dev server, store, simulator, worker, stream workflow."""
    from marketpulse.pipeline._dev import DevOptions, run_dev

    if exchange not in ("sim", "demo", "prod"):
        _fail("--exchange must be sim, demo or prod")
    opts = DevOptions(
        data_dir=data_dir,
        port=port,
        temporal_port=temporal_port,
        temporal_ui_port=temporal_ui_port,
        simulator_port=simulator_port,
        exchange=exchange,
        markets=_split(markets),
        sim_markets=sim_markets,
        sim_rate=sim_rate,
        seed=seed,
        metrics_port=metrics_port,
        alert_webhook=alert_webhook,
        ready_file=ready_file,
        auth_config=auth_config,
        db=db,
        store_nodes=store_nodes,
    )
    try:
        opts.check()
    except (ValueError, RuntimeError) as exc:
        _fail(str(exc))

    async def go() -> None:
        code = await run_dev(opts)
        if code:
            raise typer.Exit(code)

    _run_then_exit(go())


def register(app: typer.Typer) -> None:
    """Add the pipeline's commands to the ``marketpulse`` app."""
    app.command("worker")(worker)
    app.add_typer(stream_app, name="stream")
    app.command("dev")(dev)
