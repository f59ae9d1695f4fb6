"""The ``market-data`` worker: runs ``KalshiStreamWorkflow`` and its activities.

SIGTERM (or SIGINT) drains it: the worker stops polling, the stream activity sees the shutdown,
writes its last batch, marks its books unservable and returns, and the workflow hands the
stream to another worker. ``graceful_shutdown_timeout`` bounds the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Callable
from datetime import timedelta

import structlog
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from marketpulse.pipeline._alerts import Alerter
from marketpulse.pipeline._connect import connect_temporal
from marketpulse.pipeline._metrics import serve_metrics
from marketpulse.pipeline.activities import StreamActivities, WorkerSettings
from marketpulse.pipeline.config import TASK_QUEUE
from marketpulse.pipeline.workflow import KalshiStreamWorkflow

__all__ = ["build_worker", "run_worker", "workflow_runner"]

log = structlog.get_logger("marketpulse.pipeline.worker")

GRACEFUL_SHUTDOWN = timedelta(seconds=10)
"""How long a draining worker lets its activities finish before cancelling them."""


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox, with marketpulse passed through (its workflow code is deterministic)."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("marketpulse")
    )


def build_worker(
    client: Client,
    activities: StreamActivities,
    *,
    task_queue: str = TASK_QUEUE,
    graceful_shutdown_timeout: timedelta = GRACEFUL_SHUTDOWN,
) -> Worker:
    """A worker for the stream workflow and its activities.

    Heartbeats are flushed to the server at least every second, so cancelling the stream
    (restart, market removal by stop, workflow stop) reaches it within about a second.
    """
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[KalshiStreamWorkflow],
        activities=activities.activities(),
        workflow_runner=workflow_runner(),
        graceful_shutdown_timeout=graceful_shutdown_timeout,
        max_heartbeat_throttle_interval=timedelta(seconds=1),
        default_heartbeat_throttle_interval=timedelta(seconds=1),
    )


async def run_worker(
    settings: WorkerSettings,
    *,
    temporal: str = "127.0.0.1:7233",
    namespace: str = "default",
    metrics_port: int | None = None,
    task_queue: str = TASK_QUEUE,
    graceful_shutdown_timeout: timedelta = GRACEFUL_SHUTDOWN,
    connect_timeout: float = 60.0,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Connect, run until SIGTERM/SIGINT, drain, return.

    Args:
        settings: Store, admin key, exchange defaults, alert webhook.
        temporal: Temporal frontend address ``host:port``.
        namespace: Temporal namespace.
        metrics_port: Serve Prometheus ``/metrics`` on this port (0: any free port).
        task_queue: Task queue to poll.
        graceful_shutdown_timeout: Drain bound.
        connect_timeout: Seconds to keep retrying while Temporal is not ready yet.
        on_ready: Called once the worker polls.
    """
    if metrics_port is not None:
        port = serve_metrics(metrics_port)
        log.info("metrics", url=f"http://127.0.0.1:{port}/metrics")
    client = await connect_temporal(temporal, namespace=namespace, timeout=connect_timeout)
    acts = StreamActivities(client, settings, Alerter(settings.alert_webhook))
    worker = build_worker(
        client, acts, task_queue=task_queue, graceful_shutdown_timeout=graceful_shutdown_timeout
    )
    # Everything loaded so far lives as long as the process: out of the collector's full passes,
    # which otherwise walk it all while a stream's start parses megabytes of candle JSON.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    run_task = asyncio.create_task(worker.run())
    log.info(
        "worker polling",
        temporal=temporal,
        task_queue=task_queue,
        store=settings.store_url,
        exchange=settings.exchange,
    )
    if on_ready is not None:
        on_ready()
    stop_task = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if run_task.done():
            run_task.result()  # the worker died on its own: surface why
        log.info("draining worker")
        await worker.shutdown()
        await run_task
    finally:
        stop_task.cancel()
        await acts.aclose()
        log.info("worker stopped")
