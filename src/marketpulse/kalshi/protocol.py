"""Sans-I/O core of the Kalshi WebSocket v2 protocol.

:class:`KalshiProtocol` is a state machine on the sans-I/O convention shared by every protocol
core here (websockets' ``Protocol`` is the model): inputs go in (frames through
:meth:`~KalshiProtocol.receive_data`, the transport's life through
:meth:`~KalshiProtocol.connection_made` / :meth:`~KalshiProtocol.connection_lost`, time through
:meth:`~KalshiProtocol.tick`, market changes through :meth:`~KalshiProtocol.add_markets` /
:meth:`~KalshiProtocol.remove_markets`), then the driver drains what to send
(:meth:`~KalshiProtocol.data_to_send`), what happened (:meth:`~KalshiProtocol.events_received`)
and which books changed (:meth:`~KalshiProtocol.books_changed`). No sockets, no clocks (time comes
in as ``now``), no tasks. The asyncio adapter in :mod:`marketpulse.kalshi.feed` drives it; tests
feed it frames.

What it owns:

- the desired market set and one subscription per channel (one channel per ``subscribe``
  command, so each ``subscribed`` maps to exactly one sid: docs/protocols/kalshi.md §2.1, §9);
- every order book (:class:`~marketpulse.kalshi.book.OrderBook`), exact;
- ``seq`` tracking per sid. A gap or a duplicate on the order-book sid invalidates *every* book
  on it, because one sid's sequence spans all its markets and the missing message could belong
  to any of them (docs/protocols/kalshi.md §4). Recovery escalates: ``get_snapshot`` for the invalid books, then
  unsubscribe + subscribe, then reconnect (:meth:`~KalshiProtocol.close_expected`). A book that
  may have missed a message is invalid (holds no levels) until its fresh snapshot arrives;
- the counters (:class:`ProtocolStats`), which the layers above extend rather than copy.

Books are state, so book changes are not events: the core records the tickers whose book
changed or became invalid in a coalescing set (:meth:`~KalshiProtocol.books_changed`).
Everything else worth reporting is a typed event (:meth:`~KalshiProtocol.events_received`).
:meth:`~KalshiProtocol.receive_data` never raises: a malformed frame becomes a
:class:`~marketpulse.kalshi._messages.MalformedMessage` event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from marketpulse.kalshi._liveness import Liveness
from marketpulse.kalshi._messages import (
    KNOWN_ENVELOPE,
    KNOWN_FIELDS,
    MAX_QUANTITY,
    ErrorMessage,
    EventLifecycle,
    MalformedMessage,
    MarketLifecycle,
    OkMessage,
    OrderbookSnapshot,
    OtherMessage,
    ParseError,
    SubscribedMessage,
    TickerMessage,
    TradeMessage,
    UnknownMessage,
    UnsubscribedMessage,
    _raw_text,
    parse_delta,
    parse_frame,
)
from marketpulse.kalshi.book import ONE, BookError, OrderBook, PriceGrid, price_problem

__all__ = [
    "CHANNELS_WITHOUT_MARKETS",
    "DEFAULT_CHANNELS",
    "CommandBuilder",
    "InvalidBook",
    "KalshiProtocol",
    "ProtocolEvent",
    "ProtocolStats",
    "RecoveryFailed",
    "RecoveryStarted",
    "SequenceGap",
]

DEFAULT_CHANNELS = ("orderbook_delta", "ticker", "trade")
BOOK_CHANNEL = "orderbook_delta"
# market_lifecycle_v2 takes no ticker filter: it always covers every market (docs/protocols/kalshi.md §2.1).
CHANNELS_WITHOUT_MARKETS = frozenset({"market_lifecycle_v2"})


class CommandBuilder:
    """Builds client commands (docs/protocols/kalshi.md §2) with an increasing ``id`` (0 means "no id")."""

    def __init__(self) -> None:
        """Start the id counter at 1."""
        self._next = 1

    def _id(self) -> int:
        i = self._next
        self._next += 1
        return i

    def subscribe(
        self,
        channels: Sequence[str],
        market_tickers: Sequence[str] | None = None,
        *,
        market_ticker: str | None = None,
        use_yes_price: bool | None = None,
        send_initial_snapshot: bool | None = None,
        skip_ticker_ack: bool | None = None,
    ) -> dict[str, Any]:
        """``subscribe`` to channels for some markets (flags included only when given)."""
        params: dict[str, Any] = {"channels": list(channels)}
        if market_ticker is not None:
            params["market_ticker"] = market_ticker
        elif market_tickers is not None:
            params["market_tickers"] = list(market_tickers)
        for name, flag in (
            ("use_yes_price", use_yes_price),
            ("send_initial_snapshot", send_initial_snapshot),
            ("skip_ticker_ack", skip_ticker_ack),
        ):
            if flag is not None:
                params[name] = flag
        return {"id": self._id(), "cmd": "subscribe", "params": params}

    def unsubscribe(self, sids: Sequence[int]) -> dict[str, Any]:
        """``unsubscribe`` from one or more sids."""
        return {"id": self._id(), "cmd": "unsubscribe", "params": {"sids": list(sids)}}

    def update_subscription(
        self,
        sid: int,
        action: str,
        market_tickers: Sequence[str],
        *,
        send_initial_snapshot: bool | None = None,
    ) -> dict[str, Any]:
        """``update_subscription``: ``add_markets``, ``delete_markets`` or ``get_snapshot``.

        Uses the single-element ``sids`` form, which every spec version accepts.
        """
        params: dict[str, Any] = {
            "sids": [sid],
            "market_tickers": list(market_tickers),
            "action": action,
        }
        if send_initial_snapshot is not None:
            params["send_initial_snapshot"] = send_initial_snapshot
        return {"id": self._id(), "cmd": "update_subscription", "params": params}

    def list_subscriptions(self) -> dict[str, Any]:
        """``list_subscriptions`` (no params)."""
        return {"id": self._id(), "cmd": "list_subscriptions"}


# -- events the core reports besides typed server messages ----------------------------------


@dataclass(slots=True)
class SequenceGap:
    """A gap (``got > expected``) or duplicate (``got < expected``) on one sid."""

    sid: int
    channel: str
    expected: int
    got: int

    @property
    def duplicate(self) -> bool:
        """True when the frame repeated an already seen seq."""
        return self.got < self.expected


@dataclass(slots=True)
class RecoveryStarted:
    """The core escalated book recovery: 1 get_snapshot, 2 resubscribe, 3 reconnect."""

    level: int
    reason: str
    tickers: list[str]


@dataclass(slots=True)
class InvalidBook:
    """A book that cannot be right (crossed, locked, a price off its tick or out of range):
    it was marked invalid and is being recovered like a gap."""

    ticker: str
    reason: str


@dataclass(slots=True)
class RecoveryFailed:
    """These books got no snapshot through a full reconnect, twice: recovery gave up on them.

    They stay invalid (never served); a snapshot arriving later still revives them.
    """

    tickers: list[str]
    reason: str


ProtocolEvent = (
    SequenceGap
    | InvalidBook
    | RecoveryStarted
    | RecoveryFailed
    | ErrorMessage
    | MalformedMessage
    | OkMessage
    | TickerMessage
    | TradeMessage
    | MarketLifecycle
    | EventLifecycle
    | OtherMessage
)


@dataclass
class ProtocolStats:
    """Counters of the protocol core (monotonic over the core's life).

    The one set of feed counters starts here: the layers above extend this class (the feed's
    :class:`~marketpulse.kalshi.feed.FeedStats`, the pipeline's stream stats) and hand the core
    their instance, so each counter is kept once and read where it is reported. Field names
    are snake_case; only the wire (the store, Temporal) renames them.
    """

    messages: int = 0
    deltas: int = 0
    snapshots: int = 0
    tickers: int = 0
    trades: int = 0
    lifecycle: int = 0
    gaps: int = 0
    duplicates: int = 0
    malformed: int = 0
    negative_sizes: int = 0
    deltas_dropped: int = 0
    ignored: int = 0
    errors: int = 0
    recoveries: Counter[int] = field(default_factory=Counter)
    recoveries_completed: int = 0
    recoveries_failed: int = 0
    invalid_books: int = 0
    unknown_types: Counter[str] = field(default_factory=Counter)
    unknown_fields: Counter[str] = field(default_factory=Counter)
    other_types: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _Sub:
    channel: str
    markets: set[str] = field(default_factory=set)
    sid: int | None = None
    sub_cmd: int | None = None
    inflight: int | None = None
    yes_price: bool = False


@dataclass(slots=True)
class _Recovery:
    level: int  # 0: awaiting first snapshots; 1: get_snapshot sent; 2: resubscribed
    tickers: set[str]
    deadline: float
    attempts: int = 0
    cmd_id: int | None = None


@dataclass(slots=True)
class _Pending:
    kind: str  # subscribe | unsubscribe | update | list
    sub: _Sub | None
    action: str = ""
    tickers: tuple[str, ...] = ()


class KalshiProtocol:
    """The WebSocket v2 client state machine.

    Driver's duties:

    - On a new connection call :meth:`connection_made`; when it ends, :meth:`connection_lost`.
    - Pass every frame received to :meth:`receive_data`, and call :meth:`tick` about every
      ``snapshot_timeout / 4`` seconds so recovery deadlines are noticed on a quiet link.
    - After any input: send :meth:`data_to_send`'s frames in order, handle
      :meth:`events_received`, read the books named by :meth:`books_changed` when convenient
      (the set coalesces, so it may wait), and close the connection (then reconnect) when
      :meth:`close_expected` is true.

    Args:
        markets: Initial market tickers.
        channels: Channels to subscribe, one ``subscribe`` command each.
        use_yes_price: Pin the ``use_yes_price`` flag on the order-book subscription (docs/protocols/kalshi.md §8
            advises pinning it either way, since its default is announced to flip).
        send_initial_snapshot: Ask the ``ticker`` channel for an initial message per market.
        skip_ticker_ack: Ask for ``ok`` replies without the market list.
        snapshot_timeout: Seconds to wait for snapshots before escalating recovery.
        max_attempts: Retries at one recovery level (on further gaps) before escalating.
        stats: The counters to keep (an extension of :class:`ProtocolStats` owned by the
            driver); None: a fresh one.
    """

    def __init__(
        self,
        markets: Iterable[str] = (),
        channels: Sequence[str] = DEFAULT_CHANNELS,
        *,
        use_yes_price: bool = False,
        send_initial_snapshot: bool = True,
        skip_ticker_ack: bool = False,
        snapshot_timeout: float = 5.0,
        max_attempts: int = 3,
        stats: ProtocolStats | None = None,
        liveness: Liveness | None = None,
    ) -> None:
        self.channels = tuple(dict.fromkeys(channels))
        self.liveness = Liveness() if liveness is None else liveness
        """Pings and per-subscription silence (see ``_liveness``); :meth:`tick` applies it."""
        self.use_yes_price = use_yes_price
        self.send_initial_snapshot = send_initial_snapshot
        self.skip_ticker_ack = skip_ticker_ack
        self.snapshot_timeout = snapshot_timeout
        self.max_attempts = max_attempts
        self.stats = ProtocolStats() if stats is None else stats
        self.books: dict[str, OrderBook] = {}
        self._close_reason: str | None = None
        self.connected = False
        self.rejected: dict[str, str] = {}
        """Markets the exchange refused (ticker → reason); add them again to retry."""
        self._desired: dict[str, None] = {}
        self._cmd = CommandBuilder()
        self._out: list[str] = []
        self._events: list[ProtocolEvent] = []
        self._dirty: dict[str, None] = {}
        self._subs: dict[str, _Sub] = {}
        self._by_sid: dict[int, _Sub] = {}
        self._last_seq: dict[int, int] = {}
        self._ctrl_seq: dict[int, int] = {}
        self._pending: dict[int, _Pending] = {}
        self._recovery: _Recovery | None = None
        self._suspects: set[str] = set()  # awaited when recovery last forced a reconnect
        self._now = 0.0
        self._loads = orjson.loads
        self._delta_fields = KNOWN_FIELDS["orderbook_delta"]
        self._grids: dict[str, PriceGrid] = {}
        # Each book's last best YES bid and ask from the ticker channel, for the convention
        # check (one entry per book at most).
        self._quotes: dict[str, tuple[Decimal, Decimal]] = {}
        for t in markets:
            self._add_desired(t)

    # -- public API -------------------------------------------------------------------------

    @property
    def markets(self) -> list[str]:
        """The desired markets, in the order they were added."""
        return list(self._desired)

    @property
    def sids(self) -> dict[str, int]:
        """Current channel → sid map (only confirmed subscriptions)."""
        return {ch: s.sid for ch, s in self._subs.items() if s.sid is not None}

    @property
    def pending_commands(self) -> int:
        """Commands sent and not answered yet (each is cleared once its answer came)."""
        return len(self._pending)

    @property
    def recovery_level(self) -> int | None:
        """Current book-recovery level, or None when every book is settled."""
        return None if self._recovery is None else self._recovery.level

    def connection_made(self, now: float = 0.0) -> None:
        """A new connection is open: forget per-connection state and subscribe everything.

        sids are renumbered per connection, so all sid and seq state is dropped and every book
        waits for its fresh snapshot.

        After calling this, send :meth:`data_to_send`'s commands.
        """
        self._now = now
        self.connected = True
        self._close_reason = None
        self.liveness.reset(now)
        self._reset_connection_state("reconnecting")
        for ch in self.channels:
            sub = _Sub(ch, yes_price=self.use_yes_price if ch == BOOK_CHANNEL else False)
            self._subs[ch] = sub
            if self._desired or ch in CHANNELS_WITHOUT_MARKETS:
                self._subscribe(sub)
        self._watch_snapshots(set(self._desired))

    def connection_lost(self) -> None:
        """The connection is gone: every book may now miss messages, so none is served.

        Commands not yet sent are dropped (the next :meth:`connection_made` rebuilds them).
        After calling this, read :meth:`books_changed` (every valid book became invalid).
        """
        self.connected = False
        self._reset_connection_state("disconnected")

    def add_markets(self, tickers: Iterable[str]) -> list[str]:
        """Add markets without disturbing the others; returns the ones that were new.

        After calling this, send :meth:`data_to_send`'s commands.
        """
        new = [t for t in dict.fromkeys(tickers) if t not in self._desired]
        for t in new:
            self.rejected.pop(t, None)
            self._add_desired(t)
        if new and self.connected:
            for sub in self._subs.values():
                if sub.channel in CHANNELS_WITHOUT_MARKETS:
                    continue
                if sub.sid is None and sub.sub_cmd is None:
                    self._subscribe(sub)
                else:
                    self._reconcile(sub)
            self._watch_snapshots(set(new))
        return new

    def remove_markets(self, tickers: Iterable[str]) -> list[str]:
        """Remove markets; their books are dropped. Returns the ones that were present.

        After calling this, send :meth:`data_to_send`'s commands and read :meth:`books_changed`
        (a removed market is in it, with no book).
        """
        gone = [t for t in dict.fromkeys(tickers) if t in self._desired or t in self.rejected]
        for t in gone:
            self._desired.pop(t, None)
            self.rejected.pop(t, None)
            self.books.pop(t, None)
            self._quotes.pop(t, None)
            self._dirty[t] = None  # the consumer learns the book is gone
            if self._recovery is not None:
                self._recovery.tickers.discard(t)
        if self._recovery is not None and not self._recovery.tickers:
            self._recovery = None
        if gone and self.connected:
            for sub in self._subs.values():
                if sub.channel not in CHANNELS_WITHOUT_MARKETS:
                    self._reconcile(sub)
        return gone

    def list_subscriptions(self) -> int:
        """Queue ``list_subscriptions``; returns the command id (the reply is an OkMessage).

        After calling this, send :meth:`data_to_send`'s commands.
        """
        cmd = self._cmd.list_subscriptions()
        self._pending[cmd["id"]] = _Pending("list", None)
        self._send(cmd)
        return int(cmd["id"])

    def data_to_send(self) -> list[str]:
        """Commands to write to the socket, in order, as JSON text frames (empties the outbox)."""
        out = self._out
        if not out:
            return []
        self._out = []
        return out

    def events_received(self) -> list[ProtocolEvent]:
        """What happened since the last call, in order (empties the buffer)."""
        events = self._events
        if not events:
            return []
        self._events = []
        return events

    def books_changed(self) -> dict[str, None]:
        """Tickers whose book changed, became invalid or was removed since the last call.

        A coalescing set, not a queue: a book that moved many times is named once, and the
        driver reads its current state from :attr:`books` (a ticker absent there was removed).
        """
        d, self._dirty = self._dirty, {}
        return d

    def close_expected(self) -> bool:
        """Whether the driver must close the connection now (recovery escalated to reconnect).

        Then close it, call :meth:`connection_lost`, reconnect and call :meth:`connection_made`;
        :attr:`close_reason` says why.
        """
        return self._close_reason is not None

    @property
    def close_reason(self) -> str | None:
        """Why :meth:`close_expected` is true (None while it is not)."""
        return self._close_reason

    def tick(self, now: float) -> None:
        """Time passed: escalate a recovery whose deadline passed.

        After calling this, send :meth:`data_to_send`'s commands, handle
        :meth:`events_received`, read :meth:`books_changed` and check :meth:`close_expected`.
        """
        self._now = now
        if self.connected and self._close_reason is None:
            dead = self.liveness.dead(now)
            if dead is not None:
                self._close_reason = dead
                return
        rec = self._recovery
        if rec is not None and self.connected and now >= rec.deadline:
            if rec.level == 0:
                self._escalate(1, "snapshots did not arrive in time")
            else:
                self._escalate(rec.level + 1, f"recovery level {rec.level} timed out")

    def ping_due(self, now: float) -> bool:
        """Whether the driver must send a WebSocket ping now; report its pong to
        :meth:`pong_received`. A pong later than the deadline closes (:meth:`close_expected`)."""
        return self.connected and self.liveness.ping_due(now)

    def pong_received(self, now: float) -> None:
        """The pong of the last ping arrived."""
        self.liveness.pong_received(now)

    def receive_data(self, data: str | bytes, now: float | None = None) -> None:
        """Process one frame received from the exchange. Never raises.

        After calling this, send :meth:`data_to_send`'s commands, handle
        :meth:`events_received`, read :meth:`books_changed` and check :meth:`close_expected`.

        Args:
            data: The frame as received (text or bytes).
            now: Current monotonic time, for recovery deadlines.
        """
        if now is not None:
            self._now = now
        self.stats.messages += 1
        try:
            frame = self._loads(data)
        except orjson.JSONDecodeError as exc:
            self._malformed(f"invalid JSON: {exc}", data)
        else:
            if type(frame) is dict:
                self.liveness.frame(frame.get("type"), self._now)
                try:
                    if frame.get("type") == "orderbook_delta":
                        self._on_delta(frame)
                    else:
                        self._dispatch(frame)
                except (ParseError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
                    self._on_bad_frame(frame, f"{frame.get('type')}: {exc}", data)
                except Exception as exc:  # a bug must not kill the feed; report it instead
                    self._on_bad_frame(frame, f"internal error {type(exc).__name__}: {exc}", data)
            else:
                self._malformed("frame is not a JSON object", data)

    # -- hot path -----------------------------------------------------------------------------

    def _on_delta(self, frame: dict[str, Any]) -> None:
        sid = frame.get("sid")
        sub = self._by_sid.get(sid) if isinstance(sid, int) else None
        if sub is None or not isinstance(sid, int):
            self.stats.ignored += 1
            return
        seq = frame.get("seq")
        if seq is not None:
            last = self._last_seq.get(sid)
            if last is not None and seq == last + 1 and not self._ctrl_seq:
                self._last_seq[sid] = seq
            elif not self._check_seq(sub, sid, seq, False):
                return
        m = frame["msg"]
        p = m.get("price_dollars")
        dl = m.get("delta_fp")
        side = m.get("side")
        ticker = m.get("market_ticker")
        ts = m.get("ts_ms")
        if (
            type(p) is str
            and type(dl) is str
            and type(ticker) is str
            and (side == "yes" or side == "no")
            and (ts is None or type(ts) is int)
        ):
            # Current shape: skip building a message object (this is the hot path).
            price, delta = Decimal(p), Decimal(dl)
            if not (price.is_finite() and delta.is_finite() and abs(delta) <= MAX_QUANTITY):
                raise ParseError(f"non-finite price or delta out of range: {p!r} {dl!r}")
        else:  # legacy cents, JSON numbers, RFC3339 ts: the general parser
            d = parse_delta(frame, m)
            price, delta, side, ticker, ts = d.price, d.delta, d.side, d.ticker, d.ts_ms
        self.stats.deltas += 1
        if not m.keys() <= self._delta_fields:
            self._count_unknown_fields("orderbook_delta", m)
        book = self.books.get(ticker)
        if book is None:
            self.stats.ignored += 1
            return
        if not book.valid:
            self.stats.deltas_dropped += 1
            return
        try:
            new_level = book.apply_delta(side, price, delta, yes_price=sub.yes_price, ts_ms=ts)
        except BookError as exc:
            self.stats.negative_sizes += 1
            self._dirty[ticker] = None
            self._start_recovery({ticker}, f"protocol error: {exc}")
            return
        self._dirty[ticker] = None
        if new_level:
            # Only a new level can cross a book (checked on arrival, a book never holds a
            # crossing that a growing level could keep) or bring a bad price; a frame in the
            # other price convention than subscribed shows up here too
            # (docs/protocols/kalshi.md §5).
            native = ONE - price if side == "no" and sub.yes_price else price
            bad = price_problem(native, self._grids.get(ticker))
            if bad is None and book.crossed_by(side, native):
                bad = book.problem()
            if bad is not None:
                self._bad_book(ticker, bad)

    # -- sequence tracking ----------------------------------------------------------------------

    def _check_seq(self, sub: _Sub, sid: int, seq: int, control: bool) -> bool:
        """Track ``seq`` on ``sid``; returns False when the frame must be dropped (duplicate).

        Whether ``ok``/``unsubscribed``/``error`` consume a seq number is UNCONFIRMED (docs/protocols/kalshi.md §4,
        §10.1). Tolerant reading: a control frame never raises a duplicate; if it carries
        ``last + 1`` we remember it, and the next data frame may then carry either ``last + 1``
        (it did not consume) or ``last + 2`` (it did).
        """
        last = self._last_seq.get(sid)
        ctrl = self._ctrl_seq.pop(sid, None)
        if last is None:
            if control:
                self._ctrl_seq[sid] = seq
                return True
            self._last_seq[sid] = seq
            # A fresh order-book sid starts at seq 1 (docs/protocols/kalshi.md §4: community captures). A first data
            # frame beyond that (or beyond a control frame's number) means its snapshots were
            # lost: recover now rather than after the snapshot timeout. Other channels are not
            # checked, because trade captures start mid-sequence.
            first = 1 if ctrl is None else ctrl + 1
            if sub.channel == BOOK_CHANNEL and seq > first:
                self.stats.gaps += 1
                self._seq_problem(sub, sid, first, seq)
            return True
        expected = last + 1
        if seq == expected:
            if control:
                self._ctrl_seq[sid] = seq
            else:
                self._last_seq[sid] = seq
            return True
        if not control and ctrl == expected and seq == expected + 1:
            self._last_seq[sid] = seq
            return True
        if seq <= last:
            if control:
                return True
            self.stats.duplicates += 1
            self._seq_problem(sub, sid, expected, seq)
            return False
        if control and ctrl is not None and seq == ctrl + 1:
            # Two control frames each one ahead (both consumed): still in order.
            self._last_seq[sid] = ctrl
            self._ctrl_seq[sid] = seq
            return True
        self.stats.gaps += 1
        if control:
            self._last_seq[sid] = seq - 1
            self._ctrl_seq[sid] = seq
        else:
            self._last_seq[sid] = seq
        self._seq_problem(sub, sid, expected, seq)
        return True

    def _seq_problem(self, sub: _Sub, sid: int, expected: int, got: int) -> None:
        self._events.append(SequenceGap(sid, sub.channel, expected, got))
        if sub.channel == BOOK_CHANNEL:
            kind = "duplicate" if got < expected else "gap"
            self._start_recovery(set(sub.markets) & set(self._desired), f"seq {kind} on sid {sid}")

    # -- recovery -------------------------------------------------------------------------------

    def _invalidate(self, tickers: Iterable[str], reason: str) -> None:
        for t in tickers:
            book = self.books.get(t)
            if book is not None:
                book.invalidate(reason)
                self._dirty[t] = None

    def _watch_snapshots(self, tickers: set[str]) -> None:
        """Expect a snapshot for ``tickers`` within the timeout (level 0 of recovery)."""
        if BOOK_CHANNEL not in self._subs or not tickers:
            return
        rec = self._recovery
        if rec is None:
            self._recovery = _Recovery(0, set(tickers), self._now + self.snapshot_timeout)
        else:
            rec.tickers |= tickers

    def _start_recovery(self, tickers: set[str], reason: str) -> None:
        self._invalidate(tickers, reason)
        rec = self._recovery
        if rec is None or rec.level == 0:
            awaiting = set(tickers) | (rec.tickers if rec else set())
            self._recovery = _Recovery(0, awaiting, self._now)
            self._escalate(1, reason)
            return
        rec.tickers |= tickers
        rec.attempts += 1
        if rec.attempts >= self.max_attempts:
            self._escalate(rec.level + 1, f"{reason} (after {rec.attempts} attempts)")
        elif rec.level == 1:
            self._send_get_snapshot(rec, reason)
        # At level 2 the fresh subscription snapshots every market anyway.

    def _escalate(self, level: int, reason: str) -> None:
        rec = self._recovery
        if rec is None:
            return
        sub = self._subs.get(BOOK_CHANNEL)
        if level == 1 and (sub is None or sub.sid is None):
            level = 2  # nothing to ask a snapshot of: the subscription itself is missing
        self.stats.recoveries[level] += 1
        rec.level, rec.attempts = level, 0
        if level >= 3:
            stuck = rec.tickers & self._suspects
            if stuck and stuck == rec.tickers:
                # The same books got no snapshot before the last reconnect either: another
                # reconnect would only disturb the healthy ones. Give up on these (they stay
                # invalid, and revive if a snapshot ever comes).
                self._invalidate(stuck, "no snapshot from the exchange")
                self._suspects -= stuck
                self._recovery = None
                self.stats.recoveries_failed += 1
                self._events.append(RecoveryFailed(sorted(stuck), reason))
                return
            self._suspects = set(rec.tickers)
            self._close_reason = reason
            rec.deadline = float("inf")
            self._events.append(RecoveryStarted(3, reason, sorted(rec.tickers)))
            return
        if level == 1:
            self._send_get_snapshot(rec, reason)
            rec.deadline = self._now + self.snapshot_timeout
            return
        # level 2: resubscribe the order-book channel from scratch.
        rec.tickers = set(self._desired)
        self._invalidate(rec.tickers, reason)
        rec.deadline = self._now + 2 * self.snapshot_timeout
        self._events.append(RecoveryStarted(2, reason, sorted(rec.tickers)))
        if sub is not None:
            self._resubscribe(sub)

    def _send_get_snapshot(self, rec: _Recovery, reason: str) -> None:
        sub = self._subs.get(BOOK_CHANNEL)
        if sub is None or sub.sid is None:
            return
        tickers = sorted(rec.tickers & sub.markets)
        if not tickers:
            return
        cmd = self._cmd.update_subscription(sub.sid, "get_snapshot", tickers)
        self._pending[cmd["id"]] = _Pending("update", sub, "get_snapshot", tuple(tickers))
        rec.cmd_id = cmd["id"]
        self._send(cmd)
        self._events.append(RecoveryStarted(1, reason, tickers))

    def _resubscribe(self, sub: _Sub) -> None:
        if sub.sid is not None:
            self._forget_sid(sub.sid)
            self._send_unsubscribe(sub.sid)
        sub.sid = None
        sub.inflight = None
        if self._desired or sub.channel in CHANNELS_WITHOUT_MARKETS:
            self._subscribe(sub)
        else:
            sub.sub_cmd = None

    def _snapshot_arrived(self, ticker: str) -> None:
        self._suspects.discard(ticker)
        rec = self._recovery
        if rec is not None:
            rec.tickers.discard(ticker)
            if not rec.tickers:
                if rec.level > 0:
                    self.stats.recoveries_completed += 1
                self._recovery = None

    # -- subscriptions --------------------------------------------------------------------------

    def _add_desired(self, ticker: str) -> None:
        self._desired[ticker] = None
        self.books[ticker] = OrderBook(ticker)
        self._dirty[ticker] = None

    def _reset_connection_state(self, reason: str) -> None:
        self._subs.clear()
        self._by_sid.clear()
        self._last_seq.clear()
        self._ctrl_seq.clear()
        self._pending.clear()
        self._recovery = None
        self._out.clear()
        for t, book in self.books.items():
            if book.valid:
                book.invalidate(reason)
                self._dirty[t] = None

    def _send(self, cmd: dict[str, Any]) -> None:
        self._out.append(orjson.dumps(cmd).decode())

    def _subscribe(self, sub: _Sub) -> None:
        ch = sub.channel
        if ch in CHANNELS_WITHOUT_MARKETS:
            cmd = self._cmd.subscribe([ch])
            sub.markets = set()
        else:
            tickers = list(self._desired)
            kwargs: dict[str, Any] = {}
            if ch == BOOK_CHANNEL:
                kwargs["use_yes_price"] = sub.yes_price
            if ch == "ticker" and self.send_initial_snapshot:
                kwargs["send_initial_snapshot"] = True
            if self.skip_ticker_ack:
                kwargs["skip_ticker_ack"] = True
            cmd = self._cmd.subscribe([ch], tickers, **kwargs)
            sub.markets = set(tickers)
        sub.sub_cmd = cmd["id"]
        self._pending[cmd["id"]] = _Pending("subscribe", sub)
        self._send(cmd)

    def _send_unsubscribe(self, sid: int) -> None:
        cmd = self._cmd.unsubscribe([sid])
        self._pending[cmd["id"]] = _Pending("unsubscribe", None)
        self._send(cmd)

    def _forget_sid(self, sid: int) -> None:
        self._by_sid.pop(sid, None)
        self._last_seq.pop(sid, None)
        self._ctrl_seq.pop(sid, None)

    def _reconcile(self, sub: _Sub) -> None:
        """Bring one subscription's market set to the desired one, one command at a time."""
        if sub.sid is None or sub.inflight is not None or sub.channel in CHANNELS_WITHOUT_MARKETS:
            # A channel without a market filter covers every market: nothing to add or remove
            # (the exchange refuses add_markets there, and refusal would mean resubscribing).
            return
        add = [t for t in self._desired if t not in sub.markets]
        if add:
            cmd = self._cmd.update_subscription(
                sub.sid,
                "add_markets",
                add,
                send_initial_snapshot=True
                if sub.channel == "ticker" and self.send_initial_snapshot
                else None,
            )
            sub.markets.update(add)
            sub.inflight = cmd["id"]
            self._pending[cmd["id"]] = _Pending("update", sub, "add_markets", tuple(add))
            self._send(cmd)
            return
        remove = sorted(sub.markets - self._desired.keys())
        if not remove:
            return
        if len(remove) == len(sub.markets):
            # An empty market list would mean "all markets" on ticker/trade: unsubscribe.
            sid = sub.sid
            self._forget_sid(sid)
            self._send_unsubscribe(sid)
            sub.sid = sub.sub_cmd = None
            sub.markets = set()
            return
        cmd = self._cmd.update_subscription(sub.sid, "delete_markets", remove)
        sub.markets.difference_update(remove)
        sub.inflight = cmd["id"]
        self._pending[cmd["id"]] = _Pending("update", sub, "delete_markets")
        self._send(cmd)

    # -- dispatch -------------------------------------------------------------------------------

    def _seq_ok(self, frame: dict[str, Any], control: bool = False) -> tuple[_Sub | None, bool]:
        sid = frame.get("sid")
        sub = self._by_sid.get(sid) if isinstance(sid, int) else None
        seq = frame.get("seq")
        if sub is None or not isinstance(seq, int) or isinstance(seq, bool):
            return sub, True
        assert isinstance(sid, int)
        return sub, self._check_seq(sub, sid, seq, control)

    def _dispatch(self, frame: dict[str, Any]) -> None:
        t = frame.get("type")
        if t in ("orderbook_snapshot", "trade", "market_lifecycle_v2", "event_lifecycle"):
            sub, ok = self._seq_ok(frame)
            if not ok:
                return
            msg = parse_frame(frame)
            self._check_fields(t, frame)
            if isinstance(msg, OrderbookSnapshot):
                self._on_snapshot(msg, sub)
                if msg.id:
                    self._snapshot_answered(msg.id, msg.ticker)
            elif isinstance(msg, TradeMessage):
                self.stats.trades += 1
                if sub is not None and msg.ticker in self._desired:
                    self._events.append(msg)
                else:
                    self.stats.ignored += 1
            elif isinstance(msg, MarketLifecycle):
                self.stats.lifecycle += 1
                if msg.price_ranges is not None:
                    # The tick changed (or is first told): the grid the driver gave from REST
                    # at start would find the new prices off the tick and recover forever.
                    self.set_price_grid(msg.ticker, msg.price_ranges)
                if msg.ticker in self._desired:
                    self._events.append(msg)
            elif isinstance(msg, EventLifecycle):
                self.stats.lifecycle += 1
                self._events.append(msg)
            return
        if t == "ticker":
            msg = parse_frame(frame)
            self._check_fields(t, frame)
            assert isinstance(msg, TickerMessage)
            self.stats.tickers += 1
            if msg.ticker in self._desired:
                self._events.append(msg)
                self._check_convention(msg.ticker, msg.yes_bid, msg.yes_ask)
            else:
                self.stats.ignored += 1
            return
        if t in ("ok", "error", "unsubscribed"):
            _, _ = self._seq_ok(frame, control=True)
        msg = parse_frame(frame)
        if isinstance(msg, SubscribedMessage):
            self._on_subscribed(msg)
        elif isinstance(msg, OkMessage):
            self._on_ok(msg)
        elif isinstance(msg, ErrorMessage):
            self._on_error(msg)
        elif isinstance(msg, UnsubscribedMessage):
            self._pending.pop(msg.id or 0, None)
            self._forget_sid(msg.sid)
            sub = next((s for s in self._subs.values() if s.sid == msg.sid), None)
            if sub is not None:
                # The exchange ended a subscription we still hold (we never unsubscribe a
                # wanted sid without taking it off first): without a new one, its channel
                # would go silent while its books still looked valid.
                sub.sid = None
                self._resubscribe_channel(sub, f"the exchange ended {sub.channel} sid {msg.sid}")
        elif isinstance(msg, OtherMessage):
            _tally(self.stats.other_types, msg.type)
            self._events.append(msg)
        elif isinstance(msg, UnknownMessage):
            _tally(self.stats.unknown_types, msg.type)

    def _check_fields(self, t: str, frame: dict[str, Any]) -> None:
        if not frame.keys() <= KNOWN_ENVELOPE:
            self._count_unknown_fields(t, frame, KNOWN_ENVELOPE)
        known = KNOWN_FIELDS.get(t)
        m = frame.get("msg")
        if known is not None and isinstance(m, dict) and not m.keys() <= known:
            self._count_unknown_fields(t, m, known)

    def _count_unknown_fields(
        self, t: str, m: dict[str, Any], known: frozenset[str] | None = None
    ) -> None:
        known = self._delta_fields if known is None else known
        for k in m.keys() - known:
            _tally(self.stats.unknown_fields, f"{t}.{k}")

    def _on_snapshot(self, msg: OrderbookSnapshot, sub: _Sub | None) -> None:
        self.stats.snapshots += 1
        book = self.books.get(msg.ticker)
        if sub is None or sub.channel != BOOK_CHANNEL or book is None:
            self.stats.ignored += 1
            return
        try:
            book.apply_snapshot(msg.yes, msg.no, yes_price=sub.yes_price)
        except BookError as exc:
            self.stats.negative_sizes += 1
            self._dirty[msg.ticker] = None
            self._start_recovery({msg.ticker}, f"protocol error: {exc}")
            return
        self._dirty[msg.ticker] = None
        bad = book.problem(self._grids.get(msg.ticker))
        if bad is not None:
            self._bad_book(msg.ticker, bad)
            return
        self._snapshot_arrived(msg.ticker)
        self._check_convention(msg.ticker, *self._quotes.get(msg.ticker, (None, None)))

    def _check_convention(self, ticker: str, bid: Decimal | None, ask: Decimal | None) -> None:
        """Catch a book whose NO side arrived in the other price convention than subscribed
        (``use_yes_price`` on or off), against the exchange's own best bid and ask in its
        ticker: the check the crossed-book guard cannot make when the YES price is below $0.50
        (docs/protocols/kalshi.md §5). Only a ticker in step with the book (the same best YES
        bid, which no convention changes) is compared."""
        if bid is None or ask is None:
            self._quotes.pop(ticker, None)
            return
        book = self.books.get(ticker)
        if book is None:
            return
        self._quotes[ticker] = (bid, ask)
        if not book.valid or book.best_bid != bid or not book.in_other_convention(ask):
            return
        sub = self._subs.get(BOOK_CHANNEL)
        sent = "NO bid prices" if sub is not None and sub.yes_price else "YES-scale NO prices"
        self._bad_book(
            ticker,
            f"NO levels arrived as {sent}, the other price convention than subscribed: the "
            f"exchange's best YES ask {ask} is the lowest NO level read the other way, not "
            f"1 - the best NO bid ({book.best_ask})",
        )

    def _bad_book(self, ticker: str, reason: str) -> None:
        """A book that cannot be right is never served: invalid, and recovered like a gap."""
        self.stats.invalid_books += 1
        self._events.append(InvalidBook(ticker, reason))
        self._start_recovery({ticker}, f"invalid book: {reason}")

    def set_price_grid(self, ticker: str, grid: PriceGrid | None) -> None:
        """The market's price ranges (REST ``price_ranges``), so that a price off its tick
        invalidates the book; None: only the (0, 1) range is checked. A lifecycle event that
        carries ``price_ranges`` replaces them by itself."""
        if grid:
            self._grids[ticker] = grid
        else:
            self._grids.pop(ticker, None)

    def _on_subscribed(self, msg: SubscribedMessage) -> None:
        if msg.sid in self._by_sid:
            return  # a repeat of a sid we hold: unsubscribing it would end our own feed
        p = self._pending.pop(msg.id, None) if msg.id else None
        sub = p.sub if p is not None and p.kind == "subscribe" else None
        if sub is None or sub.channel != msg.channel:
            # No id echoed (or a multi-channel reply): match the channel awaiting a sid.
            cand = self._subs.get(msg.channel)
            sub = cand if cand is not None and cand.sid is None else None
        if sub is None or self._subs.get(sub.channel) is not sub:
            # A subscription we no longer want (e.g. superseded): drop it server-side too.
            self._send_unsubscribe(msg.sid)
            return
        sub.sid = msg.sid
        sub.sub_cmd = None
        self._by_sid[msg.sid] = sub
        self._reconcile(sub)  # markets added or removed while the subscribe was in flight

    def _snapshot_answered(self, cmd_id: int, ticker: str) -> None:
        """A snapshot carrying a command's id: Kalshi answers ``get_snapshot`` with the
        snapshots alone (no ``ok``), so the command is done once each of its markets came."""
        p = self._pending.get(cmd_id)
        if p is None or p.action != "get_snapshot":
            return
        p.tickers = tuple(t for t in p.tickers if t != ticker)
        if not p.tickers:
            del self._pending[cmd_id]

    def _on_merged(self, sub: _Sub, msg: OkMessage) -> None:
        """``ok`` answering a ``subscribe``: the exchange merged it into a subscription of the
        channel it already had (docs/protocols/kalshi.md §2.1). Adopt that sid; markets that
        were already in it get no fresh snapshot, so a pending recovery asks for them."""
        sub.sub_cmd = None
        if msg.sid is None or self._subs.get(sub.channel) is not sub:
            return
        if sub.sid != msg.sid:
            if sub.sid is not None:
                self._forget_sid(sub.sid)
            sub.sid = msg.sid
            self._by_sid[msg.sid] = sub
            if msg.seq is not None and msg.sid not in self._last_seq:
                # The ok took the sid's number: the next data frame carries one more.
                self._ctrl_seq[msg.sid] = msg.seq
        rec = self._recovery
        if sub.channel == BOOK_CHANNEL and rec is not None and rec.level >= 1:
            self._send_get_snapshot(rec, "subscribe merged into an existing subscription")
        self._reconcile(sub)

    def _on_ok(self, msg: OkMessage) -> None:
        p = self._pending.pop(msg.id, None) if msg.id else None
        if p is None or p.kind == "list":
            self._events.append(msg)
            return
        sub = p.sub
        if p.kind == "subscribe" and sub is not None:
            self._on_merged(sub, msg)
            return
        if p.kind == "update" and sub is not None:
            if sub.inflight == msg.id:
                sub.inflight = None
            # msg.market_tickers (the server's full list) is not adopted: a market the server
            # silently left out would otherwise be re-added forever.
            if self._subs.get(sub.channel) is sub:
                self._reconcile(sub)

    def _on_error(self, msg: ErrorMessage) -> None:
        self.stats.errors += 1
        self._events.append(msg)
        p = self._pending.pop(msg.id, None) if msg.id else None
        if (
            p is not None
            and msg.market_tickers
            and (p.kind == "subscribe" or p.action == "add_markets")
        ):
            self._on_markets_rejected(p, msg)
            return
        if p is not None and p.sub is not None and self._subs.get(p.sub.channel) is p.sub:
            sub = p.sub
            if p.kind == "subscribe":
                sub.sub_cmd = None
                if sub.channel == BOOK_CHANNEL and self._recovery is not None:
                    self._escalate(3, f"subscribe failed: {msg.code} {msg.text}")
                return
            if p.kind == "update":
                sub.inflight = None
                if p.action == "get_snapshot":
                    self._escalate(2, f"get_snapshot failed: {msg.code} {msg.text}")
                else:
                    self._resubscribe_channel(sub, f"{p.action} failed: {msg.code}")
                return
        if msg.terminal and msg.sid is not None:
            target = self._by_sid.get(msg.sid)
            if target is not None:
                self._resubscribe_channel(target, f"terminal error {msg.code} on sid {msg.sid}")

    def _on_markets_rejected(self, p: _Pending, msg: ErrorMessage) -> None:
        """The exchange refused some markets (e.g. unknown tickers): drop them, keep the rest.

        Their books stay invalid with the exchange's reason (so a consumer can tell), and the
        command is retried without them; other channels' identical errors land here too.
        """
        reason = f"rejected by the exchange: {msg.code} {msg.text}".strip()
        for t in msg.market_tickers:
            if t in self._desired:
                del self._desired[t]
                self.rejected[t] = reason
                self._invalidate([t], reason)
                if self._recovery is not None:
                    self._recovery.tickers.discard(t)
        if self._recovery is not None and not self._recovery.tickers:
            self._recovery = None
        sub = p.sub
        if sub is None or self._subs.get(sub.channel) is not sub:
            return
        # The whole command failed, not only the named markets: none of them were added.
        sub.markets.difference_update(p.tickers or msg.market_tickers)
        if p.kind == "subscribe":
            sub.sub_cmd = None
            if self._desired or sub.channel in CHANNELS_WITHOUT_MARKETS:
                self._subscribe(sub)
        else:
            sub.inflight = None
            self._reconcile(sub)

    def _resubscribe_channel(self, sub: _Sub, reason: str) -> None:
        if sub.channel == BOOK_CHANNEL:
            if self._recovery is None:
                self._recovery = _Recovery(0, set(self._desired), self._now)
            self._escalate(2, reason)
        else:
            self._resubscribe(sub)

    # -- malformed ------------------------------------------------------------------------------

    def _malformed(self, reason: str, data: str | bytes) -> None:
        self.stats.malformed += 1
        self._events.append(MalformedMessage(reason, _raw_text(data)))

    def _on_bad_frame(self, frame: dict[str, Any], reason: str, data: str | bytes) -> None:
        self._malformed(reason, data)
        # A sequenced book frame we could not read is a lost message for that sid.
        sid = frame.get("sid")
        sub = self._by_sid.get(sid) if type(sid) is int else None
        if (
            sub is not None
            and sub.channel == BOOK_CHANNEL
            and frame.get("type") in ("orderbook_delta", "orderbook_snapshot")
        ):
            self._start_recovery(set(sub.markets) & set(self._desired), "unreadable book frame")


_TALLY_KEYS = 256
_TALLY_KEY_CHARS = 64


def _tally(counter: Counter[str], key: str) -> None:
    """Count ``key`` in ``counter``. The keys are the server's words (a type, a field name), so
    both their number and their length are capped: a hostile feed cannot grow the stats."""
    key = key[:_TALLY_KEY_CHARS]
    if key in counter or len(counter) < _TALLY_KEYS:
        counter[key] += 1
