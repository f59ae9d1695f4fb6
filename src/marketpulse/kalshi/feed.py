"""asyncio adapter: drives :class:`~marketpulse.kalshi.protocol.KalshiProtocol` over ``websockets``.

:class:`KalshiFeed` owns one signed WebSocket connection (re-signed on every reconnect), answers
pings (the ``websockets`` library does), reconnects with jittered exponential backoff, resubscribes
everything after a reconnect, and watches for staleness. Its consumer iterates typed events.

It is the core's driver and nothing more: read a frame → ``receive_data`` → send
``data_to_send()`` → route ``events_received()`` → reconnect when ``close_expected()``; a timer
calls ``tick``. Everything Kalshi-specific lives in the core.

Back-pressure policy (the reader never waits for the consumer):

- Books are state. A changed book is a *ticker in a coalescing set*, not a queued delta: however
  many deltas arrive before the consumer looks, it gets one :class:`BookUpdated` (or
  :class:`BookInvalidated`) per ticker and reads the live book then.
- Tickers are state too: the latest :class:`~marketpulse.kalshi.TickerMessage` per market wins.
- Trades are events: a bounded deque (``trade_queue_size``). When full the *oldest* trade is
  dropped and ``stats.trades_dropped`` counts it; recent trades matter more to a live view.
- Notices (lifecycle, errors, gaps, recovery, malformed frames) share another bounded deque with
  the same drop-oldest policy, counted in ``stats.notices_dropped``.
- :class:`FeedState` is the latest connection state only.

Memory is bounded by the number of markets plus the two deque sizes, whatever the consumer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from marketpulse._aio import cancel_and_wait
from marketpulse._clock import now_ms
from marketpulse.kalshi._liveness import Liveness
from marketpulse.kalshi._messages import (
    ErrorMessage,
    EventLifecycle,
    MalformedMessage,
    MarketLifecycle,
    OkMessage,
    OtherMessage,
    TickerMessage,
    TradeMessage,
)
from marketpulse.kalshi.auth import WS_PATH, KalshiCredentials, handshake_logger
from marketpulse.kalshi.book import OrderBook
from marketpulse.kalshi.protocol import (
    DEFAULT_CHANNELS,
    KalshiProtocol,
    ProtocolEvent,
    ProtocolStats,
    RecoveryFailed,
    RecoveryStarted,
    SequenceGap,
)

__all__ = [
    "BookInvalidated",
    "BookUpdated",
    "FeedEvent",
    "FeedState",
    "FeedStats",
    "KalshiFeed",
]

log = logging.getLogger("marketpulse.kalshi.feed")
_HANDSHAKE_LOG = handshake_logger("websockets.client.kalshi")


@dataclass(slots=True)
class BookUpdated:
    """A market's book changed and is valid. ``book`` is the live book: read it now."""

    ticker: str
    book: OrderBook


@dataclass(slots=True)
class BookInvalidated:
    """A market's book must not be served (gap, reconnect, removed, awaiting snapshot)."""

    ticker: str
    reason: str


@dataclass
class FeedStats(ProtocolStats):
    """The core's counters, extended with the connection's (one object, shared with the core).

    Monotonic, except the state and the gauges ``connected``, ``books_valid`` and
    ``books_total`` (refreshed when read through :attr:`KalshiFeed.stats`). Times are wall-clock
    epoch milliseconds.
    """

    state: str = "idle"
    state_since: float = field(default_factory=now_ms)
    disconnected_since: float = field(default_factory=now_ms)
    """When the current outage began (0 while connected); connecting and reconnecting
    states in a row are one outage."""
    connected: bool = False
    bytes: int = 0
    reconnects: int = 0
    stale_reconnects: int = 0
    trades_dropped: int = 0
    notices_dropped: int = 0
    last_frame_at: float = 0.0
    """When the last frame was received (0: none yet)."""
    last_pong_at: float = 0.0
    """When the last pong to our liveness pings came back (0: none yet)."""
    books_valid: int = 0
    books_total: int = 0

    def set_state(self, state: str) -> None:
        """Enter ``state`` (a repeat of the current one changes nothing)."""
        if state == self.state:
            return
        self.state = state
        self.state_since = now_ms()
        self.connected = state == "connected"
        # A feed flapping between connecting and reconnecting is still down: keep the start
        # of the outage, not of the latest state.
        if self.connected:
            self.disconnected_since = 0.0
        elif not self.disconnected_since:
            self.disconnected_since = self.state_since


@dataclass(slots=True)
class FeedState:
    """Connection state changed: ``connecting``, ``connected``, ``reconnecting`` or ``closed``.

    ``stats`` is the feed's live counters object, not a copy.
    """

    state: str
    reason: str | None
    stats: FeedStats


Notice = (
    MarketLifecycle
    | EventLifecycle
    | ErrorMessage
    | SequenceGap
    | RecoveryStarted
    | RecoveryFailed
    | MalformedMessage
    | OkMessage
    | OtherMessage
)
FeedEvent = BookUpdated | BookInvalidated | TickerMessage | TradeMessage | FeedState | Notice


class _Reconnect(Exception):
    pass


class KalshiFeed:
    """A self-healing Kalshi WebSocket v2 market-data feed.

    Use as ``async with KalshiFeed(...) as feed: async for event in feed: ...``.

    Args:
        url: WebSocket URL (e.g. ``wss://external-api-ws.kalshi.com/trade-api/ws/v2``).
        credentials: Signs the handshake; None connects unsigned (servers refuse that).
        markets: Initial market tickers.
        channels: Channels to subscribe.
        reconnect_delay: First reconnect delay in seconds (the seed's ``reconnectDelay``);
            doubles per failed attempt up to ``max_reconnect_delay``, with ±20 % jitter.
        max_reconnect_delay: Backoff ceiling.
        stale_after: Reconnect when nothing came from the exchange for this many seconds: no
            frame, and no pong to the liveness ping sent once the link has been quiet for half
            of it. A quiet market on a live connection is not stale; a stalled peer is.
        snapshot_timeout: Seconds before book recovery escalates a level.
        use_yes_price: Subscribe the order book with ``use_yes_price``.
        trade_queue_size: Bound of the trade deque (drop-oldest, counted).
        notice_queue_size: Bound of the notice deque (drop-oldest, counted).
        ping_interval: websockets' keep-alive pings (the server's pings are answered regardless).
        ping_timeout: websockets closes when its keep-alive pong does not come back in time.
        liveness_ping: Seconds between the application's own pings (None: none); a pong later
            than ``pong_deadline`` drops the connection, so a stalled exchange is noticed in
            ``liveness_ping + pong_deadline`` seconds (``_liveness`` also watches each
            subscription's silence against its usual message rate).
        pong_deadline: Seconds a liveness pong may take.
        open_timeout: Handshake timeout.
        on_frame: Called with every received frame (bytes) and its wall-clock receive time in
            epoch ms, before parsing (the recorder uses it). Exceptions are logged, not raised.
        stats: The counters to keep (shared with the core; a layer above may pass its own
            extension of :class:`FeedStats`); None: a fresh one.
    """

    def __init__(
        self,
        url: str,
        credentials: KalshiCredentials | None,
        markets: Iterable[str] = (),
        channels: Sequence[str] = DEFAULT_CHANNELS,
        *,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
        stale_after: float = 30.0,
        snapshot_timeout: float = 5.0,
        use_yes_price: bool = False,
        trade_queue_size: int = 10_000,
        notice_queue_size: int = 1_000,
        ping_interval: float | None = 10.0,
        ping_timeout: float | None = 10.0,
        open_timeout: float = 10.0,
        max_size: int = 64 * 1024 * 1024,
        on_frame: Callable[[bytes, int], None] | None = None,
        stats: FeedStats | None = None,
        liveness_ping: float | None = 1.0,
        pong_deadline: float = 2.0,
    ) -> None:
        self.url = url
        self._creds = credentials
        self._sign_path = urlsplit(url).path or WS_PATH
        self._stats = FeedStats() if stats is None else stats
        self.protocol = KalshiProtocol(
            markets,
            channels,
            use_yes_price=use_yes_price,
            snapshot_timeout=snapshot_timeout,
            stats=self._stats,
            liveness=Liveness(liveness_ping, pong_deadline),
        )
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.stale_after = stale_after
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._open_timeout = open_timeout
        self._max_size = max_size
        self._on_frame = on_frame
        self._trades: deque[TradeMessage] = deque(maxlen=max(1, trade_queue_size))
        self._notices: deque[Notice] = deque(maxlen=max(1, notice_queue_size))
        self._tickers: dict[str, TickerMessage] = {}
        self._books: dict[str, None] = {}
        self._state_event: FeedState | None = None
        self._wakeup = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._last_rx = 0.0
        self._last_pong = 0.0
        self._probe: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._connections = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> KalshiFeed:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start connecting in the background (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kalshi-feed")
            self._watchdog = asyncio.create_task(self._watch(), name="kalshi-feed-watchdog")

    async def close(self) -> None:
        """Stop: close the socket (briefly), cancel the tasks, end iteration. Safe to call twice."""
        self._closing = True
        ws, self._ws = self._ws, None
        if ws is not None:
            await _close_socket(ws, "client closing")
        await cancel_and_wait(self._watchdog, self._task, self._probe)
        if not self._closed:
            self._closed = True
            self._set_state("closed", None)

    # -- consumer side ------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[FeedEvent]:
        return self

    async def __anext__(self) -> FeedEvent:
        while True:
            ev = self._next_ready()
            if ev is not None:
                return ev
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    def drain(self) -> list[FeedEvent]:
        """Every event ready now, without waiting (for batch consumers)."""
        out: list[FeedEvent] = []
        while (ev := self._next_ready()) is not None:
            out.append(ev)
        return out

    def _next_ready(self) -> FeedEvent | None:
        if self._state_event is not None:
            ev: FeedEvent = self._state_event
            self._state_event = None
            return ev
        if self._notices:
            return self._notices.popleft()
        if self._trades:
            return self._trades.popleft()
        if self._tickers:
            t = next(iter(self._tickers))
            return self._tickers.pop(t)
        if not self._books:
            self._books = self.protocol.books_changed()
        while self._books:
            t = next(iter(self._books))
            del self._books[t]
            book = self.protocol.books.get(t)
            if book is None:
                return BookInvalidated(t, "removed")
            if book.valid:
                return BookUpdated(t, book)
            return BookInvalidated(t, book.invalid_reason)
        return None

    # -- control ------------------------------------------------------------------------------

    @property
    def books(self) -> dict[str, OrderBook]:
        """Every book by ticker (check ``valid`` before serving one)."""
        return self.protocol.books

    @property
    def markets(self) -> list[str]:
        """The markets this feed follows."""
        return self.protocol.markets

    @property
    def state(self) -> str:
        """``idle``, ``connecting``, ``connected``, ``reconnecting`` or ``closed``."""
        return self._stats.state

    async def add_markets(self, tickers: Iterable[str]) -> list[str]:
        """Follow more markets, live, without disturbing the others."""
        new = self.protocol.add_markets(tickers)
        await self._after_input()
        return new

    async def remove_markets(self, tickers: Iterable[str]) -> list[str]:
        """Stop following markets; their books are dropped (a BookInvalidated "removed")."""
        gone = self.protocol.remove_markets(tickers)
        await self._after_input()
        return gone

    async def reconnect(self, reason: str = "requested") -> None:
        """Drop the connection now; the feed reconnects and resubscribes."""
        ws = self._ws
        if ws is not None:
            await ws.close(code=1000, reason=reason[:100])

    @property
    def stats(self) -> FeedStats:
        """The counters: the live object the core counts in (its gauges refreshed now)."""
        st = self._stats
        st.connected = self._ws is not None and st.state == "connected"
        books = self.protocol.books
        st.books_valid = sum(1 for b in books.values() if b.valid)
        st.books_total = len(books)
        return st

    # -- internals ----------------------------------------------------------------------------

    def _set_state(self, state: str, reason: str | None) -> None:
        self._stats.set_state(state)
        self._state_event = FeedState(state, reason, self.stats)
        self._wakeup.set()

    async def _send(self, out: list[str]) -> None:
        """Send the core's commands (dropped while disconnected: they are rebuilt on connect)."""
        ws = self._ws
        if ws is None:
            return
        for cmd in out:
            try:
                await ws.send(cmd)
            except ConnectionClosed:
                return  # the reader notices and reconnects; commands are rebuilt then

    async def _after_input(self) -> None:
        """The driver's duties after any input to the core but a frame (see ``_run``)."""
        out = self.protocol.data_to_send()
        if out:
            await self._send(out)
        events = self.protocol.events_received()
        if events:
            self._route(events)
        self._wakeup.set()

    def _route(self, events: Sequence[ProtocolEvent]) -> None:
        for e in events:
            if type(e) is TradeMessage:
                if len(self._trades) == self._trades.maxlen:
                    self._stats.trades_dropped += 1
                self._trades.append(e)
            elif type(e) is TickerMessage:
                self._tickers[e.ticker] = e
            else:
                if len(self._notices) == self._notices.maxlen:
                    self._stats.notices_dropped += 1
                self._notices.append(e)  # type: ignore[arg-type]

    def _headers(self) -> dict[str, str]:
        return {} if self._creds is None else self._creds.headers("GET", self._sign_path)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        protocol, stats = self.protocol, self._stats
        attempt = 0
        while not self._closing:
            self._set_state("connecting" if self._connections == 0 else "reconnecting", None)
            reason = "closed"
            try:
                async with connect(
                    self.url,
                    additional_headers=self._headers(),
                    open_timeout=self._open_timeout,
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_timeout,
                    close_timeout=2.0,
                    max_size=self._max_size,
                    max_queue=64,
                    proxy=None,
                    compression="deflate",
                    logger=_HANDSHAKE_LOG,
                ) as ws:
                    if self._connections:
                        self._stats.reconnects += 1
                    self._connections += 1
                    self._ws = ws
                    self._last_rx = loop.time()
                    self.protocol.connection_made(self._last_rx)
                    await self._after_input()
                    self._set_state("connected", None)
                    first = True
                    while True:
                        data = await ws.recv(decode=False)
                        now = loop.time()
                        self._last_rx = now
                        wall_ms = now_ms()
                        stats.last_frame_at = wall_ms
                        stats.bytes += len(data)
                        if self._on_frame is not None:
                            try:
                                self._on_frame(data, int(wall_ms))
                            except Exception:
                                log.exception("on_frame callback failed")
                        protocol.receive_data(data, now)
                        out = protocol.data_to_send()
                        if out:
                            await self._send(out)
                        events = protocol.events_received()
                        if events:
                            self._route(events)
                        if protocol.close_expected():
                            raise _Reconnect(protocol.close_reason)
                        if first:
                            attempt, first = 0, False  # the link works: reset the backoff
                        self._wakeup.set()
            except asyncio.CancelledError:
                raise
            except _Reconnect as exc:
                reason = f"recovery: {exc}"
            except InvalidStatus as exc:
                # 401 or 403 (which one Kalshi sends is unconfirmed, docs/protocols/kalshi.md §1.2): either way the
                # reason says so and we keep retrying with backoff (a key may be fixed meanwhile).
                reason = f"handshake rejected: HTTP {exc.response.status_code}"
            except (ConnectionClosed, InvalidHandshake, InvalidURI, OSError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # never let the feed die silently
                log.exception("unexpected feed error")
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                self._ws = None
                self._stats.connected = False
                self.protocol.connection_lost()
                self._wakeup.set()
            if self._closing:
                break
            delay = min(self.max_reconnect_delay, self.reconnect_delay * (2**attempt))
            delay *= random.uniform(0.8, 1.2)
            attempt = min(attempt + 1, 30)
            log.info("kalshi feed reconnecting in %.2fs: %s", delay, reason)
            self._set_state("reconnecting", reason)
            await asyncio.sleep(delay)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        liveness = self.protocol.liveness
        period = max(
            0.05,
            min(
                1.0,
                self.stale_after / 4,
                self.protocol.snapshot_timeout / 4,
                liveness.pong_timeout / 4,
                (liveness.ping_interval or 1.0) / 4,
            ),
        )
        while not self._closing:
            await asyncio.sleep(period)
            ws = self._ws
            if ws is None:
                continue
            now = loop.time()
            if self.protocol.ping_due(now):
                self._pinger = asyncio.create_task(self._ping(ws), name="kalshi-ping")
            self.protocol.tick(now)
            await self._after_input()
            quiet = now - max(self._last_rx, self._last_pong)
            if self.protocol.close_expected():
                await self._drop(ws, "recovery escalated to reconnect")
            elif quiet > self.stale_after:
                self._stats.stale_reconnects += 1
                await self._drop(ws, f"stale: nothing for {self.stale_after:g}s")
            elif quiet > self.stale_after / 2 and self._probe is None:
                # Markets can be quiet for minutes; only a peer that stops answering is stale.
                # (websockets answers the exchange's pings without telling us, so ask ourselves.)
                self._probe = asyncio.create_task(self._probe_liveness(ws), name="kalshi-probe")
            self._wakeup.set()

    async def _ping(self, ws: ClientConnection) -> None:
        """One liveness ping; the core decides when a missing pong is too late."""
        with contextlib.suppress(Exception):  # closed meanwhile: the run loop reconnects
            pong = await ws.ping()
            await pong
            if self._ws is ws:
                self.protocol.pong_received(asyncio.get_running_loop().time())
                self._stats.last_pong_at = now_ms()

    async def _probe_liveness(self, ws: ClientConnection) -> None:
        try:
            pong = await ws.ping()
            await pong
            self._last_pong = asyncio.get_running_loop().time()
        except Exception:  # closed meanwhile: the run loop reconnects; nothing to report here
            pass
        finally:
            self._probe = None

    async def _drop(self, ws: ClientConnection, reason: str) -> None:
        log.info("kalshi feed dropping connection: %s", reason)
        await _close_socket(ws, reason)


# A close frame is polite, but the exchange's reply can sit behind a backlog of market data (or
# never come from a stalled peer): waiting out websockets' close_timeout made every stop and
# every stale reconnect seconds slower. Say goodbye, wait briefly, then drop the TCP connection.
CLOSE_REPLY_WAIT = 0.25


async def _close_socket(ws: ClientConnection, reason: str) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_REPLY_WAIT):
            await ws.close(code=1000, reason=reason[:100])
    with contextlib.suppress(Exception):
        ws.transport.abort()
