"""``KalshiStreamWorkflow``: supervises one exchange feed; never touches its data.

What goes through history (all of it bounded per unit of time, none of it per tick):

- one long-running stream activity per (re)start, with Temporal's retry and backoff;
- ``addMarkets`` / ``removeMarkets`` signals and the ``updateMarkets`` update;
- a health check activity every ``healthCheckInterval``; a cleanup activity every
  ``cleanupInterval``;
- continue-as-new when the server suggests it, carrying the market set.

How a market change reaches the running feed without a restart: the workflow only changes its
``desiredMarkets`` (a version number and a list). The stream activity asks for it with a
Temporal query every ~200 ms, through the worker's own client, and diffs it against what it
subscribes; queries are not recorded in history, the feed's other subscriptions are untouched,
and the change is live within a few hundred milliseconds. The workflow never sends data to
the activity, and the activity never sends data to the workflow: its counters travel in its
heartbeat details, which the health check reads back through ``describe``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from marketpulse.pipeline.config import (
        CLEANUP_ACTIVITY,
        HEALTH_ACTIVITY,
        STREAM_ACTIVITY,
        CleanupInput,
        HealthInput,
        HealthReport,
        MarketsChange,
        MarketSet,
        StreamConfig,
        StreamInput,
        WorkflowStatus,
        normalise_tickers,
    )

__all__ = ["KalshiStreamWorkflow"]

# A stream activity runs until cancelled; this only has to be longer than any real run.
_STREAM_START_TO_CLOSE = timedelta(days=3650)

# Patch ids (``workflow.patched``): histories recorded before a change replay the old way.
_TIMERS_LEFT_ON_STOP = "timers-left-on-stop"


@workflow.defn(name="KalshiStreamWorkflow")
class KalshiStreamWorkflow:
    """Keeps one Kalshi (or simulator) feed streaming into the store."""

    @workflow.init
    def __init__(self, config: StreamConfig) -> None:
        """Set up state before any signal of the first activation is delivered."""
        self._config = config
        try:
            self._markets = normalise_tickers(list(config.markets))
        except ValueError:
            self._markets = []  # run() reports the error and fails the workflow
        self._version = 1
        self._state = "starting"
        self._stop_requested = False
        self._stopping = False
        self._continuing = False
        self._handle: workflow.ActivityHandle[object] | None = None
        self._restart_reason = ""
        self._stream_starts = 0
        self._health_restarts = 0
        self._last_health: HealthReport | None = None
        self._last_cleanup: dict[str, object] | None = None
        self._next_cleanup_at = 0.0  # epoch ms; carried to the next run

    # -- run --------------------------------------------------------------------------------

    @workflow.run
    async def run(self, config: StreamConfig) -> WorkflowStatus:
        """Supervise until stopped (or continue-as-new when history grows large).

        Args:
            config: The seed's stream configuration (no credentials).

        Returns:
            The final status, when stopped.
        """
        try:
            self._config = config.validated()
        except ValueError as exc:
            raise ApplicationError(f"invalid stream config: {exc}", non_retryable=True) from None
        tasks = [
            asyncio.create_task(self._supervise_stream()),
            asyncio.create_task(self._health_loop()),
            asyncio.create_task(self._cleanup_loop()),
        ]
        try:
            await workflow.wait_condition(
                lambda: self._stop_requested or self._should_continue_as_new()
            )
        except GeneratorExit:
            # The run is being garbage-collected, away from its event loop (its worker went
            # without evicting it), where no workflow call may run: there is nothing to stop.
            raise
        except BaseException:
            # Workflow cancellation: stop the feed cleanly before the run closes.
            await self._stop_feed(tasks)
            raise
        # Continuing as new: markets changed until the new run starts are carried to it.
        self._continuing = not self._stop_requested
        await self._stop_feed(tasks)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if not self._stop_requested:
            self._state = "continuing"
            workflow.logger.info(
                "continuing as new",
                extra={"markets": len(self._markets), "generation": self._config.generation + 1},
            )
            workflow.continue_as_new(
                dataclasses.replace(
                    self._config,
                    markets=list(self._markets),
                    generation=self._config.generation + 1,
                    nextCleanupAt=self._next_cleanup_at,
                )
            )
        self._state = "stopped"
        return self._status()

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        if info.is_continue_as_new_suggested():
            return True
        limit = self._config.continueAsNewAfterEvents
        return bool(limit) and info.get_current_history_length() >= limit

    async def _stop_feed(self, tasks: list[asyncio.Task[None]]) -> None:
        """Stop the stream activity (and, on histories before the patch, the timer loops)."""
        self._stopping = True
        self._state = "continuing" if self._continuing else "stopping"
        if workflow.patched(_TIMERS_LEFT_ON_STOP):
            # The timer loops are left as they are: the run closes over their timers.
            # Cancelling a timer (or a health check) in the very moment it fires is a race
            # the real server settles, but the time-skipping test server rejects the
            # workflow task and the run hangs; and nothing is gained by cancelling them.
            self._cancel_stream("workflow stopping")
            await asyncio.gather(tasks[0], return_exceptions=True)
        else:
            for task in tasks[1:]:
                task.cancel()
            self._cancel_stream("workflow stopping")
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- the stream activity ------------------------------------------------------------------

    async def _supervise_stream(self) -> None:
        cfg = self._config
        retry = RetryPolicy(
            initial_interval=timedelta(seconds=cfg.reconnectDelay),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=max(cfg.maxRetryInterval, cfg.reconnectDelay)),
            maximum_attempts=0,
        )
        while not self._stopping:
            if not self._markets:
                self._state = "idle"
                await workflow.wait_condition(lambda: bool(self._markets) or self._stopping)
                continue
            self._stream_starts += 1
            self._restart_reason = ""
            self._state = "streaming"
            self._handle = workflow.start_activity(
                STREAM_ACTIVITY,
                StreamInput(
                    config=dataclasses.replace(cfg, markets=list(self._markets)),
                    streamId=self._stream_id(),
                    marketsVersion=self._version,
                ),
                start_to_close_timeout=_STREAM_START_TO_CLOSE,
                heartbeat_timeout=timedelta(seconds=cfg.heartbeatTimeout),
                retry_policy=retry,
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            try:
                await self._handle
                # It returned by itself (its worker is draining): hand over to another worker,
                # after a short pause so a misbehaving activity cannot spin the history.
                if not self._stopping and not self._restart_reason:
                    await workflow.sleep(timedelta(seconds=min(cfg.reconnectDelay, 1.0)))
            except ActivityError as err:
                if self._restart_reason or self._stopping:
                    continue  # we cancelled it; loop restarts unless stopping
                # Retries are unlimited, so only a non-retryable failure gets here.
                workflow.logger.error(
                    "stream activity failed for good; restarting after backoff",
                    extra={"error": str(err.cause or err)},
                )
                self._state = "failed"
                await workflow.sleep(timedelta(seconds=max(cfg.maxRetryInterval, 1.0)))
            except CancelledError:
                if not self._stopping and not self._restart_reason:
                    raise
            finally:
                self._handle = None

    def _cancel_stream(self, reason: str) -> None:
        if self._handle is not None and not self._handle.done():
            self._restart_reason = reason
            self._handle.cancel()

    def _stream_id(self) -> str:
        return self._config.streamId or workflow.info().workflow_id

    # -- timers -------------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        cfg = self._config
        while True:
            await workflow.sleep(timedelta(seconds=cfg.healthCheckInterval))
            if self._stopping:
                return
            if self._handle is None:
                continue
            info = workflow.info()
            try:
                report: HealthReport = await workflow.execute_activity(
                    HEALTH_ACTIVITY,
                    HealthInput(
                        workflowId=info.workflow_id,
                        runId=info.run_id,
                        staleAfter=cfg.staleAfter,
                        heartbeatTimeout=cfg.heartbeatTimeout,
                        healthCheckInterval=cfg.healthCheckInterval,
                        streamId=self._stream_id(),
                    ),
                    result_type=HealthReport,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(maximum_attempts=2),
                )
            except ActivityError as err:
                workflow.logger.warning("health check failed", extra={"error": str(err.cause)})
                continue
            self._last_health = report
            if report.stale and self._handle is not None:
                self._health_restarts += 1
                workflow.logger.warning("restarting a stale feed", extra={"reason": report.reason})
                self._cancel_stream(f"stale: {report.reason}")

    async def _cleanup_loop(self) -> None:
        cfg = self._config
        # Due when the last run said (each run is often shorter than cleanupInterval: counting
        # from every run's start, the cleanup never came), else an interval from now.
        due = cfg.nextCleanupAt
        while True:
            now_ms = workflow.now().timestamp() * 1000.0
            wait = max(1.0, (due - now_ms) / 1000.0) if due else cfg.cleanupInterval
            due = 0.0
            self._next_cleanup_at = now_ms + wait * 1000.0
            await workflow.sleep(timedelta(seconds=wait))
            if self._stopping:
                return
            try:
                result = await workflow.execute_activity(
                    CLEANUP_ACTIVITY,
                    CleanupInput(olderThanMs=cfg.retention * 1000.0),
                    result_type=dict,
                    start_to_close_timeout=timedelta(minutes=5),
                    retry_policy=RetryPolicy(maximum_attempts=3),
                )
            except ActivityError as err:
                workflow.logger.warning("cleanup failed", extra={"error": str(err.cause)})
                continue
            self._last_cleanup = {**result, "at": workflow.now().timestamp() * 1000.0}

    # -- handlers -----------------------------------------------------------------------------

    def _change_markets(self, add: list[str], remove: list[str]) -> MarketSet:
        current = list(self._markets)
        removed = set(normalise_tickers(remove))
        new = [m for m in current if m not in removed]
        new = normalise_tickers(new + normalise_tickers(add))
        if new != current:
            self._markets = new
            self._version += 1
        return MarketSet(version=self._version, markets=list(self._markets))

    @workflow.signal(name="addMarkets")
    def add_markets(self, markets: list[str]) -> None:
        """Start streaming these markets (the others keep their subscriptions)."""
        try:
            self._change_markets(list(markets), [])
        except (ValueError, TypeError) as exc:
            workflow.logger.warning("addMarkets ignored", extra={"error": str(exc)})

    @workflow.signal(name="removeMarkets")
    def remove_markets(self, markets: list[str]) -> None:
        """Stop streaming these markets."""
        try:
            self._change_markets([], list(markets))
        except (ValueError, TypeError) as exc:
            workflow.logger.warning("removeMarkets ignored", extra={"error": str(exc)})

    @workflow.update(name="updateMarkets")
    def update_markets(self, change: MarketsChange) -> MarketSet:
        """Add and remove markets; returns the new set (acknowledged, unlike the signals)."""
        return self._change_markets(list(change.add), list(change.remove))

    @update_markets.validator
    def _validate_update(self, change: MarketsChange) -> None:
        normalise_tickers(list(change.add))
        normalise_tickers(list(change.remove))
        # Refused once stopping for good; while continuing as new, the change is carried.
        if self._stop_requested or (self._stopping and not self._continuing):
            raise ValueError("the stream is stopping")

    @workflow.signal(name="stop")
    def stop(self) -> None:
        """Stop the feed and complete the workflow."""
        self._stop_requested = True

    @workflow.signal(name="restartStream")
    def restart_stream(self) -> None:
        """Restart the feed (fresh connection and snapshots) without changing markets."""
        self._cancel_stream("restart requested")

    @workflow.query(name="desiredMarkets")
    def desired_markets(self) -> MarketSet:
        """The market set the stream activity must converge to."""
        return MarketSet(version=self._version, markets=list(self._markets))

    @workflow.query(name="status")
    def status(self) -> WorkflowStatus:
        """Supervisor state plus the feed counters from the last health check."""
        return self._status()

    def _status(self) -> WorkflowStatus:
        info = workflow.info()
        return WorkflowStatus(
            workflowId=info.workflow_id,
            runId=info.run_id,
            state=self._state,
            markets=list(self._markets),
            marketsVersion=self._version,
            channels=list(self._config.channels()),
            exchange=self._config.exchange,
            streamStarts=self._stream_starts,
            healthRestarts=self._health_restarts,
            continuedAsNew=self._config.generation,
            historyLength=info.get_current_history_length(),
            lastHealth=self._last_health,
            lastCleanup=dict(self._last_cleanup) if self._last_cleanup else None,
        )
