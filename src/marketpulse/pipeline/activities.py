"""Activities of ``KalshiStreamWorkflow``: the long-running stream, the health check, cleanup.

Credentials come from the worker process (``KALSHI_API_KEY_ID`` plus
``KALSHI_PRIVATE_KEY_PATH`` or ``KALSHI_PRIVATE_KEY``), read when a stream attempt starts, so
neither workflow arguments nor history ever hold key material, and a rotated key is picked up
by the next attempt. The store is written through its wire API (the sync WebSocket by default, see
:class:`marketpulse.pipeline._store.StoreClient`) with the admin key the worker was given; the
engine is never imported here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from temporalio import activity
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from marketpulse.pipeline._alerts import Alerter
from marketpulse.pipeline._backfill import fetch_trades_since
from marketpulse.pipeline._batch_writer import DEFAULT_IN_FLIGHT
from marketpulse.pipeline._exchange import Exchange, resolve_exchange
from marketpulse.pipeline._history import RestHistory
from marketpulse.pipeline._metadata import fetch_markets, price_grid
from marketpulse.pipeline._store import StoreClient, StoreError
from marketpulse.pipeline._stream import FeedLike, StreamRunner, StreamStats
from marketpulse.pipeline.config import (
    CLEANUP_ACTIVITY,
    HEALTH_ACTIVITY,
    STREAM_ACTIVITY,
    CleanupInput,
    HealthInput,
    HealthReport,
    MarketSet,
    StreamConfig,
    StreamInput,
)

__all__ = ["StreamActivities", "WorkerSettings", "all_finished"]

log = structlog.get_logger("marketpulse.pipeline.activities")

_FAILING_AFTER_ATTEMPTS = 3
_FEED_STALE_AFTER = 30.0


@dataclass
class WorkerSettings:
    """What a worker process knows that workflows must not carry.

    Attributes:
        store_url: Store base URL.
        admin_key: Store admin key (kept out of repr).
        exchange: Default exchange when a workflow leaves ``exchange`` empty.
        sim_url: Simulator base URL for ``exchange=sim``.
        alert_webhook: Where alerts are POSTed (None: log only).
        flush_window: Seconds a batch may wait for more events while the feed is busy.
        poll_interval: Seconds between desired-market polls of the stream activity.
        lease_ms: The stream's lease in the store (docs/marketdata.md): its books and prices
            go stale this long after the feed was last heard from.
        batches_in_flight: ``applyUpdates`` batches the stream sends ahead of the store's
            answers, at most.
    """

    store_url: str
    admin_key: str = field(repr=False)
    exchange: str = "sim"
    sim_url: str | None = None
    alert_webhook: str | None = None
    flush_window: float = 0.005
    poll_interval: float = 0.2
    lease_ms: float = 3000.0
    batches_in_flight: int = DEFAULT_IN_FLIGHT


class StreamActivities:
    """The pipeline's activities, bound to one worker's client, store and settings.

    Args:
        client: Temporal client of the worker (the stream polls its workflow's desired
            markets with it; the health check describes the workflow with it).
        settings: Worker settings.
        alerter: Alert sink shared by the worker's activities.
    """

    def __init__(self, client: Client, settings: WorkerSettings, alerter: Alerter | None = None):
        self.client = client
        self.settings = settings
        self.alerter = alerter or Alerter(settings.alert_webhook)
        self._store: StoreClient | None = None

    @property
    def store(self) -> StoreClient:
        """The shared store client (created on first use, inside the worker's event loop)."""
        if self._store is None:
            self._store = StoreClient(self.settings.store_url, self.settings.admin_key)
        return self._store

    def activities(self) -> list[Any]:
        """Every activity, for ``Worker(activities=...)``."""
        return [self.stream, self.health, self.cleanup]

    async def aclose(self) -> None:
        """Release the store connection."""
        if self._store is not None:
            await self._store.aclose()

    # -- stream -------------------------------------------------------------------------------

    @activity.defn(name=STREAM_ACTIVITY)
    async def stream(self, inp: StreamInput) -> dict[str, Any]:
        """Run the feed into the store until cancelled or the worker shuts down.

        Returns:
            The attempt's final counters and why it ended (``worker shutdown``).

        Raises:
            ApplicationError: The exchange or credentials are unusable (retried by Temporal
                with backoff; the alert fires once attempts keep failing).
        """
        # At once: the start-up below may take seconds, and the heartbeat timeout counts from
        # the attempt's start (details come with the runner's first report).
        activity.heartbeat()
        info = activity.info()
        cfg = inp.config
        stream_id = inp.streamId
        structlog.contextvars.bind_contextvars(stream=stream_id, attempt=info.attempt)
        if info.attempt >= _FAILING_AFTER_ATTEMPTS:
            await self.alerter.alert(
                stream_id,
                "activity_failing",
                f"stream activity is on attempt {info.attempt}",
                attempt=info.attempt,
            )
        exchange = self._exchange(cfg)
        creds = _load_credentials()
        log.info(
            "stream starting",
            exchange=exchange.name,
            ws=exchange.ws_url,
            markets=len(cfg.markets),
            channels=list(cfg.channels()),
        )
        handle = self.client.get_workflow_handle(
            info.workflow_id or "", run_id=info.workflow_run_id
        )

        async def desired() -> MarketSet:
            result: MarketSet = await handle.query("desiredMarkets", result_type=MarketSet)
            return result

        # A retried attempt gets the input of its first attempt: start from the workflow's
        # current market set instead, so markets removed since are not streamed even briefly.
        version = inp.marketsVersion
        try:
            # Bounded: right after a worker crash the query may wait on the dead worker's
            # sticky queue; the running feed follows the set by query anyway.
            async with asyncio.timeout(2.0):
                current = await desired()
            cfg = dataclasses.replace(cfg, markets=list(current.markets))
            version = current.version
        except Exception as exc:
            log.warning("desired markets unavailable at start", error=str(exc)[:200])

        feeds: list[FeedLike] = []

        def feed_factory(markets: list[str], stats: StreamStats) -> FeedLike:
            feeds.append(_make_feed(exchange, creds, markets, cfg, stats))
            return feeds[-1]

        rest = _make_rest(exchange, creds)

        def seen(market: Any) -> None:
            # The market's price grid: a book with a price off it is invalid and recovered.
            protocol = getattr(feeds[-1], "protocol", None) if feeds else None
            if protocol is not None:
                protocol.set_price_grid(market.ticker, price_grid(market) or None)

        async def metadata(tickers: list[str]) -> list[dict[str, Any]]:
            return await fetch_markets(rest, tickers, seen)

        async def trades_since(tickers: list[str], since_ms: float) -> list[dict[str, Any]]:
            return await fetch_trades_since(rest, tickers, since_ms)

        runner = StreamRunner(
            stream_id=stream_id,
            config=cfg,
            markets_version=version,
            feed_factory=feed_factory,
            store=self.store,
            alerter=self.alerter,
            desired=desired,
            heartbeat=activity.heartbeat,
            metadata=metadata,
            trades_since=trades_since,
            history=RestHistory(rest),
            flush_window=self.settings.flush_window,
            poll_interval=self.settings.poll_interval,
            lease_ms=self.settings.lease_ms,
            batches_in_flight=self.settings.batches_in_flight,
        )
        try:
            result = await runner.run(stop=activity.wait_for_worker_shutdown())
        except asyncio.CancelledError:
            log.info("stream cancelled", messages=runner.stats.messages)
            raise
        finally:
            aclose = getattr(rest, "aclose", None)
            if aclose is not None:
                await aclose()
        log.info("stream stopped: worker shutdown", messages=runner.stats.messages)
        return {**result, "reason": "worker shutdown"}

    def _exchange(self, cfg: StreamConfig) -> Exchange:
        try:
            return resolve_exchange(
                cfg.exchange or self.settings.exchange, sim_url=self.settings.sim_url
            )
        except ValueError as exc:
            raise ApplicationError(str(exc), type="InvalidExchange", non_retryable=True) from None

    # -- health -------------------------------------------------------------------------------

    @activity.defn(name=HEALTH_ACTIVITY)
    async def health(self, inp: HealthInput) -> HealthReport:
        """Judge the stream activity from its last heartbeat (read with ``describe``)."""
        now_ms = time.time() * 1000.0
        handle = self.client.get_workflow_handle(inp.workflowId, run_id=inp.runId)
        desc = await handle.describe()
        report = HealthReport(checkedAt=now_ms, reason="no stream activity")
        for pa in desc.raw_description.pending_activities:
            if pa.activity_type.name != STREAM_ACTIVITY:
                continue
            report = self._judge(pa, inp, now_ms)
            break
        if report.stale:
            await self.alerter.alert(inp.streamId, "stale", f"stream is stale: {report.reason}")
        elif report.attempt >= _FAILING_AFTER_ATTEMPTS and not report.running:
            await self.alerter.alert(
                inp.streamId,
                "activity_failing",
                f"stream activity keeps failing (attempt {report.attempt}): {report.lastFailure}",
                attempt=report.attempt,
            )
        return report

    def _judge(self, pa: Any, inp: HealthInput, now_ms: float) -> HealthReport:
        details: dict[str, Any] = {}
        if pa.HasField("heartbeat_details") and pa.heartbeat_details.payloads:
            try:
                decoded = self.client.data_converter.payload_converter.from_payloads(
                    list(pa.heartbeat_details.payloads)
                )
                if decoded and isinstance(decoded[-1], dict):
                    details = decoded[-1]
            except Exception:
                details = {}
        hb_age = (
            max(0.0, now_ms / 1000.0 - pa.last_heartbeat_time.ToMicroseconds() / 1e6)
            if pa.HasField("last_heartbeat_time")
            else 0.0
        )
        running = pa.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        report = HealthReport(
            running=running,
            attempt=int(pa.attempt),
            state=str(details.get("state", "")),
            messages=int(details.get("messages", 0)),
            batches=int(details.get("batches", 0)),
            reconnects=int(details.get("reconnects", 0)),
            gaps=int(details.get("gaps", 0)),
            lastMessageAt=float(details.get("lastMessageAt", 0.0)),
            lastHeartbeatAgeS=round(hb_age, 3),
            lastFailure=(pa.last_failure.message[:300] if pa.HasField("last_failure") else ""),
            checkedAt=now_ms,
        )
        if not running:
            report.reason = "waiting for retry" if pa.attempt > 1 else "scheduled"
            return report
        if not details:
            report.reason = "started, no heartbeat yet"
            return report
        down_since = float(details.get("disconnectedSince") or 0.0)
        not_connected_s = (now_ms - down_since) / 1000.0 if down_since else 0.0
        last_data = report.lastMessageAt or float(details.get("startedAt", now_ms))
        quiet_s = (now_ms - last_data) / 1000.0
        # A missing heartbeat is first the server's to act on: it gives the attempt up after
        # heartbeatTimeout and retries it. Judged stale at that same moment, the health check
        # raced that retry with a restart of its own (a new activity, attempt 1); it only acts
        # when the server has had a whole check interval more and the attempt still runs.
        if hb_age > inp.heartbeatTimeout + inp.healthCheckInterval:
            report.stale, report.reason = True, f"no heartbeat for {hb_age:.1f}s"
        elif not_connected_s > inp.healthCheckInterval:
            report.stale = True
            report.reason = f"{report.state or 'not connected'} for {not_connected_s:.1f}s"
        elif inp.staleAfter > 0 and quiet_s > inp.staleAfter:
            if "markets" in details and not int(details["markets"] or 0):
                # Every market was removed: nothing is streamed, so nothing is expected.
                report.reason = f"no markets; no data for {quiet_s:.1f}s"
            elif all_finished(details):
                # Closed and settled markets send nothing more: quiet is expected, not stale.
                report.reason = f"every market finished; no data for {quiet_s:.1f}s"
            else:
                report.stale, report.reason = True, f"no data for {quiet_s:.1f}s"
        else:
            report.reason = report.state or "running"
        return report

    # -- cleanup ------------------------------------------------------------------------------

    @activity.defn(name=CLEANUP_ACTIVITY)
    async def cleanup(self, inp: CleanupInput) -> dict[str, Any]:
        """Run ``marketData:cleanup`` until nothing older is left (at most ``maxRounds``)."""
        deleted = 0
        more = False
        for _ in range(max(1, inp.maxRounds)):
            try:
                result = await self.store.mutation(
                    "marketData:cleanup", {"olderThanMs": inp.olderThanMs}
                )
            except StoreError as exc:
                raise ApplicationError(str(exc), type="StoreError") from None
            deleted += int((result or {}).get("deleted", 0))
            more = bool((result or {}).get("more", False))
            activity.heartbeat(deleted)
            if not more:
                break
        log.info("cleanup done", deleted=deleted, more=more)
        return {"deleted": deleted, "more": more}


def _load_credentials() -> Any:
    from marketpulse.kalshi import KalshiAuthError, KalshiCredentials

    try:
        return KalshiCredentials.from_env()
    except KalshiAuthError as exc:
        # The message names variables/paths only (kalshi.auth guarantees no key material).
        raise ApplicationError(f"Kalshi credentials: {exc}", type="KalshiAuthError") from None


def _make_feed(
    exchange: Exchange, creds: Any, markets: list[str], cfg: StreamConfig, stats: StreamStats
) -> FeedLike:
    from marketpulse.kalshi import KalshiFeed

    feed: FeedLike = KalshiFeed(
        exchange.ws_url,
        creds,
        markets,
        channels=cfg.channels(),
        reconnect_delay=min(cfg.reconnectDelay, 5.0),
        stale_after=_FEED_STALE_AFTER,
        stats=stats,
    )
    return feed


def _make_rest(exchange: Exchange, creds: Any) -> Any:
    from marketpulse.kalshi import KalshiRestClient

    return KalshiRestClient(exchange.rest_url, creds)


def all_finished(details: dict[str, Any]) -> bool:
    """Whether a heartbeat says every streamed market closed or settled (none expects data)."""
    markets = int(details.get("markets") or 0)
    return markets > 0 and int(details.get("finished") or 0) >= markets
