"""The server side of one Kalshi WS v2 connection, sans I/O.

On the sans-I/O convention of every protocol core here (websockets' ``Protocol`` is the model):
client frames in (:meth:`Session.receive_data`), the exchange's events in
(:meth:`Session.send_events`), a full outbound buffer in (:meth:`Session.buffer_overflowed`),
then the driver drains the encoded frames (:meth:`Session.data_to_send`). No sockets, no clocks:
the asyncio adapter in ``_transport`` moves bytes and this class decides what Kalshi would say.

Sequencing: every subscription has one ``seq`` counter starting at 1 and incremented for every
sequenced frame on it (``orderbook_snapshot``, ``orderbook_delta``, ``trade``,
``market_lifecycle_v2``, and the ``ok`` / ``unsubscribed`` / ``error`` frames that carry its
``sid``). Whether Kalshi's ``ok`` consumes a number is unconfirmed (docs/protocols/kalshi.md §10.1); consuming it keeps
the stream contiguous for a client that follows the spec's safe rule (take ``seq`` from any frame
with ``sid`` and ``seq``; a gap only when ``seq > last + 1``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from marketpulse.kalshi import ERROR_TEXTS
from marketpulse.simulator._book import Book
from marketpulse.simulator._catalog import Market
from marketpulse.simulator._faults import DUPLICATE, REORDER, SKIP, Faults
from marketpulse.simulator._frames import (
    encode_msg,
    response,
    seq_frame,
    snapshot_msg,
    ticker_frame,
)
from marketpulse.simulator._model import Event, Ticker

CHANNELS = frozenset(
    {
        "orderbook_delta",
        "ticker",
        "trade",
        "fill",
        "market_positions",
        "market_lifecycle_v2",
        "multivariate_market_lifecycle",
        "communications",
        "order_group_updates",
        "user_orders",
        "cfbenchmarks_value",
        "cfbenchmarks_value_5hz",
        "pyth_value",
    }
)
PRIVATE = frozenset(
    {
        "orderbook_delta",
        "fill",
        "market_positions",
        "communications",
        "order_group_updates",
        "user_orders",
    }
)
SEQUENCED = frozenset(
    {
        "orderbook_delta",
        "trade",
        "market_lifecycle_v2",
        "multivariate_market_lifecycle",
        "communications",
        "order_group_updates",
        "cfbenchmarks_value",
        "cfbenchmarks_value_5hz",
        "pyth_value",
    }
)
MARKET_FILTERED = frozenset(
    {"orderbook_delta", "ticker", "trade", "fill", "market_positions", "user_orders"}
)
ACTIONS = frozenset({"add_markets", "delete_markets", "get_snapshot"})

log = logging.getLogger("marketpulse.simulator")


class ExchangeView(Protocol):
    """What a session needs from the exchange."""

    @property
    def markets(self) -> Mapping[str, Market]: ...

    def book(self, ticker: str) -> Book: ...

    def current_ticker(self, ticker: str) -> Ticker: ...


class CommandError(Exception):
    """A command that Kalshi would answer with ``type: error``.

    The frame carries the code's published text only (:data:`~marketpulse.kalshi.ERROR_TEXTS`),
    as the exchange's does; ``detail`` (what exactly was wrong) goes to the simulator's debug
    log, and ``extra`` (e.g. ``market_tickers``) into the frame's ``msg``.
    """

    def __init__(self, code: int, detail: str | None = None, **extra: Any) -> None:
        super().__init__(ERROR_TEXTS[code])
        self.code = code
        self.detail = detail
        self.extra = extra


@dataclass(slots=True)
class Subscription:
    """One ``sid`` on one connection."""

    sid: int
    channel: str
    markets: dict[str, None] | None  # insertion-ordered set; None = every market
    use_yes_price: bool = False
    skip_ticker_ack: bool = False
    send_initial_snapshot: bool = False
    seq: int = 0
    sequenced: bool = False


def _tickers(params: Mapping[str, Any]) -> list[str] | None:
    one = params.get("market_ticker")
    many = params.get("market_tickers")
    if one is not None and many is not None:
        raise CommandError(11, "market_ticker and market_tickers are mutually exclusive")
    if one is not None:
        if not isinstance(one, str) or not one:
            raise CommandError(11, "market_ticker must be a string")
        return [one]
    if many is not None:
        if not isinstance(many, list) or not all(isinstance(t, str) and t for t in many):
            raise CommandError(11, "market_tickers must be a list of strings")
        return list(dict.fromkeys(many))
    return None


def _flag(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name, False)
    if not isinstance(value, bool):
        raise CommandError(11, f"{name} must be a boolean")
    return value


class Session:
    """Kalshi WS v2 server logic for one connection.

    Driver's duties: pass every complete client text message to :meth:`receive_data` and every
    batch of exchange events to :meth:`send_events`; after either, send :meth:`data_to_send`'s
    frames in order (holding them back is allowed: they wait, and :meth:`pending_bytes` says
    how much waits). When the connection's outbound buffer passes its bound, call
    :meth:`buffer_overflowed`.
    """

    def __init__(
        self,
        exchange: ExchangeView,
        *,
        authenticated: bool = True,
        faults: Faults | None = None,
        legacy: bool = False,
        max_markets_per_subscription: int = 500_000,
    ) -> None:
        """Create a session.

        Args:
            exchange: Markets, books and current tickers.
            authenticated: False for an anonymous connection (private channels answer error 9).
            faults: Fault hooks; None for none.
            legacy: Also emit the pre-March-2026 integer fields.
            max_markets_per_subscription: Above this, error 26.
        """
        self.exchange = exchange
        self.authenticated = authenticated
        self.faults = faults
        self.legacy = legacy
        self.max_markets = max_markets_per_subscription
        self.subs: dict[int, Subscription] = {}
        self._next_sid = 1
        self._out: list[bytes] = []
        self._sized = 0  # how many of _out are counted in _out_bytes
        self._out_bytes = 0
        self.data_frames = 0
        self.internal_errors = 0  # commands that hit a simulator bug (answered with error 1)
        self._held: bytes | None = None  # a frame held back by a reorder fault

    # ----------------------------------------------------------------------- commands

    def receive_data(self, text: str | bytes) -> None:
        """Handle one client text message (a command). Never raises.

        After calling this, send :meth:`data_to_send`'s frames.
        """
        cmd_id: int | None = None
        try:
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise CommandError(1, "invalid JSON") from None
            if not isinstance(obj, dict):
                raise CommandError(1, "expected a JSON object")
            raw_id = obj.get("id")
            if raw_id is not None and (not isinstance(raw_id, int) or isinstance(raw_id, bool)):
                raise CommandError(1, "id must be an integer")
            cmd_id = raw_id or None  # id 0 means "no id"
            cmd = obj.get("cmd")
            params = obj.get("params")
            if cmd == "subscribe":
                self._subscribe(cmd_id, self._params(params))
            elif cmd == "unsubscribe":
                self._unsubscribe(cmd_id, self._params(params))
            elif cmd == "update_subscription":
                self._update(cmd_id, self._params(params))
            elif cmd == "list_subscriptions":
                subs = [{"channel": s.channel, "sid": s.sid} for s in self.subs.values()]
                self._out.append(response(self._with_id({"type": "ok", "msg": subs}, cmd_id)))
            else:
                raise CommandError(5)
        except CommandError as exc:
            self._out.append(self._error(cmd_id, exc))
        except Exception:
            # A command shape nobody anticipated must cost the client one error frame, never the
            # connection or the simulator: answer as Kalshi does for what it cannot process.
            log.exception("simulator: unexpected error handling a command")
            self.internal_errors += 1
            self._out.append(self._error(cmd_id, CommandError(1)))

    @staticmethod
    def _params(params: object) -> dict[str, Any]:
        if not isinstance(params, dict) or not params:
            raise CommandError(2)
        return params

    @staticmethod
    def _with_id(d: dict[str, Any], cmd_id: int | None) -> dict[str, Any]:
        return {"id": cmd_id, **d} if cmd_id else d

    def _error(
        self, cmd_id: int | None, exc: CommandError, sub: Subscription | None = None
    ) -> bytes:
        if exc.detail:
            log.debug("simulator: error %d to command %s: %s", exc.code, cmd_id, exc.detail)
        msg: dict[str, Any] = {"code": exc.code, "msg": str(exc), **exc.extra}
        d: dict[str, Any] = {"type": "error", "msg": msg}
        if sub is not None:
            d["sid"] = sub.sid
            if sub.sequenced:
                sub.seq += 1
                d["seq"] = sub.seq
        return response(self._with_id(d, cmd_id))

    def _check_known(self, tickers: Iterable[str]) -> None:
        unknown = [t for t in tickers if t not in self.exchange.markets]
        if unknown:
            raise CommandError(11, "unknown market tickers", market_tickers=unknown)

    def _subscribe(self, cmd_id: int | None, params: dict[str, Any]) -> None:
        channels = params.get("channels")
        if not channels or not isinstance(channels, list):
            raise CommandError(3)
        if not all(isinstance(c, str) for c in channels):
            raise CommandError(11, "channels must be strings")
        unknown = [c for c in channels if c not in CHANNELS]
        if unknown:
            raise CommandError(8, f"channel {unknown[0]!r}")
        tickers = _tickers(params)
        has_ids = params.get("market_id") is not None or params.get("market_ids") is not None
        use_yes = _flag(params, "use_yes_price")
        skip_ack = _flag(params, "skip_ticker_ack")
        initial = _flag(params, "send_initial_snapshot")
        for ch in channels:
            if ch in PRIVATE and not self.authenticated:
                raise CommandError(9)
            if ch == "orderbook_delta":
                if has_ids:
                    raise CommandError(11, "orderbook_delta does not accept market ids")
                if not tickers:
                    raise CommandError(14)
            if ch.startswith("cfbenchmarks") and not params.get("index_ids"):
                raise CommandError(24)
            if ch == "pyth_value" and not params.get("underlying_tickers"):
                raise CommandError(28)
            if ch == "communications":
                self._check_shards(params)
        if has_ids:
            # Only ``ticker`` takes market ids; the simulator resolves them to tickers.
            ids = params.get("market_ids") or [params.get("market_id")]
            by_id = {m.market_id: t for t, m in self.exchange.markets.items()}
            if not isinstance(ids, list) or any(
                not isinstance(i, str) or i not in by_id for i in ids
            ):
                raise CommandError(11, "unknown market id")
            tickers = [*(tickers or []), *(by_id[i] for i in ids)]
        if tickers:
            self._check_known(tickers)
            if len(tickers) > self.max_markets:
                raise CommandError(26)
        for ch in channels:
            existing = self._by_channel(ch)
            if existing is not None:
                self._merge(cmd_id, existing, tickers if ch in MARKET_FILTERED else None)
                continue
            sub = Subscription(
                self._next_sid,
                ch,
                dict.fromkeys(tickers) if tickers and ch in MARKET_FILTERED else None,
                use_yes_price=use_yes and ch == "orderbook_delta",
                skip_ticker_ack=skip_ack,
                send_initial_snapshot=initial,
                sequenced=ch in SEQUENCED,
            )
            self._next_sid += 1
            self.subs[sub.sid] = sub
            self._out.append(
                response(
                    self._with_id(
                        {"type": "subscribed", "msg": {"channel": ch, "sid": sub.sid}}, cmd_id
                    )
                )
            )
            if ch == "orderbook_delta" and sub.markets:
                self._snapshots(sub, list(sub.markets))
            elif ch == "ticker" and initial:
                self._initial_tickers(sub, list(sub.markets) if sub.markets else None)

    def _by_channel(self, channel: str) -> Subscription | None:
        for sub in self.subs.values():
            if sub.channel == channel:
                return sub
        return None

    def _merge(self, cmd_id: int | None, sub: Subscription, tickers: list[str] | None) -> None:
        """A ``subscribe`` on a channel this connection already has: Kalshi merges the markets
        into the existing subscription and answers ``ok`` with its sid (the ``ok`` takes the
        sid's next seq), then snapshots the markets that were new (docs/protocols/kalshi.md
        §2.1)."""
        added: list[str] = []
        if sub.markets is not None:
            if tickers is None:
                sub.markets = None  # no filter now: every market
            else:
                added = [t for t in tickers if t not in sub.markets]
                if len(sub.markets) + len(added) > self.max_markets:
                    raise CommandError(26)
                sub.markets.update(dict.fromkeys(added))
        self._ok(cmd_id, sub)
        if sub.channel == "orderbook_delta" and added:
            self._snapshots(sub, added)
        elif sub.channel == "ticker" and sub.send_initial_snapshot and added:
            self._initial_tickers(sub, added)

    def _ok(self, cmd_id: int | None, sub: Subscription) -> None:
        sub.seq += 1
        ok: dict[str, Any] = {"sid": sub.sid, "seq": sub.seq, "type": "ok"}
        if not sub.skip_ticker_ack:
            ok["msg"] = {"market_tickers": list(sub.markets) if sub.markets is not None else []}
        self._out.append(response(self._with_id(ok, cmd_id)))

    @staticmethod
    def _check_shards(params: Mapping[str, Any]) -> None:
        factor = params.get("shard_factor")
        key = params.get("shard_key")
        if factor is None:
            if key is not None:
                raise CommandError(20)
            return
        if not isinstance(factor, int) or factor <= 0:
            raise CommandError(19)
        if factor > 100:
            raise CommandError(22)
        if key is not None and (not isinstance(key, int) or not 0 <= key < factor):
            raise CommandError(21)

    def _snapshots(self, sub: Subscription, tickers: list[str], cmd_id: int | None = None) -> None:
        ex = self.exchange
        for t in tickers:
            sub.seq += 1
            body = snapshot_msg(ex.markets[t], ex.book(t), sub.use_yes_price, self.legacy)
            self._out.append(seq_frame("orderbook_snapshot", sub.sid, sub.seq, body, cmd_id))

    def _initial_tickers(self, sub: Subscription, tickers: list[str] | None) -> None:
        ex = self.exchange
        for t in tickers if tickers is not None else list(ex.markets):
            ev = ex.current_ticker(t)
            self._out.append(ticker_frame(sub.sid, encode_msg(ev, ex.markets, False, self.legacy)))

    def _sids(self, params: Mapping[str, Any]) -> list[int]:
        sids = params.get("sids")
        if not sids:
            raise CommandError(4)
        if not isinstance(sids, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in sids
        ):
            raise CommandError(11, "sids must be a list of integers")
        return sids

    def _unsubscribe(self, cmd_id: int | None, params: dict[str, Any]) -> None:
        sids = self._sids(params)
        for sid in dict.fromkeys(sids):
            sub = self.subs.pop(sid, None)
            if sub is None:
                self._out.append(self._error(cmd_id, CommandError(7)))
                continue
            sub.seq += 1
            self._out.append(
                response(
                    self._with_id({"sid": sid, "seq": sub.seq, "type": "unsubscribed"}, cmd_id)
                )
            )

    def _update(self, cmd_id: int | None, params: dict[str, Any]) -> None:
        action = params.get("action")
        if not action:
            raise CommandError(15)
        sid = params.get("sid")
        sids = params.get("sids")
        if sid is None and sids is None:
            raise CommandError(4)
        if sid is not None and sids is not None:
            raise CommandError(12)
        if sids is not None:
            if not isinstance(sids, list) or len(sids) != 1:
                raise CommandError(12)
            sid = sids[0]
        if not isinstance(sid, int) or isinstance(sid, bool):
            raise CommandError(11, "sid must be an integer")
        if not isinstance(action, str) or action not in ACTIONS:
            raise CommandError(13)
        sub = self.subs.get(sid)
        if sub is None:
            raise CommandError(7)
        if action == "get_snapshot" and sub.channel != "orderbook_delta":
            raise CommandError(13, "get_snapshot applies to orderbook_delta only")
        if sub.channel not in MARKET_FILTERED:
            raise CommandError(13, f"{action} is not supported on {sub.channel}")
        try:
            tickers = _tickers(params)
        except CommandError as exc:
            self._out.append(self._error(cmd_id, exc, sub))
            return
        if not tickers:
            self._out.append(self._error(cmd_id, CommandError(14), sub))
            return
        try:
            self._check_known(tickers)
        except CommandError as exc:
            self._out.append(self._error(cmd_id, exc, sub))
            return
        added: list[str] = []
        if action == "add_markets":
            if sub.markets is not None:
                added = [t for t in tickers if t not in sub.markets]
                if len(sub.markets) + len(added) > self.max_markets:
                    self._out.append(self._error(cmd_id, CommandError(26), sub))
                    return
                sub.markets.update(dict.fromkeys(added))
            if "send_initial_snapshot" in params:
                sub.send_initial_snapshot = _flag(params, "send_initial_snapshot")
        elif action == "delete_markets":
            if sub.markets is None:
                # An all-markets subscription has no list to delete from.
                self._out.append(
                    self._error(cmd_id, CommandError(11, "subscription covers all markets"), sub)
                )
                return
            for t in tickers:
                sub.markets.pop(t, None)
        else:
            missing = [t for t in tickers if sub.markets is not None and t not in sub.markets]
            if missing:
                self._out.append(
                    self._error(
                        cmd_id,
                        CommandError(11, "market not in this subscription", market_tickers=missing),
                        sub,
                    )
                )
                return
        if action == "get_snapshot":
            # Kalshi answers get_snapshot with the snapshots alone, each carrying the
            # command's id: no ok before them (docs/protocols/kalshi.md §2.3).
            self._snapshots(sub, tickers, cmd_id)
            return
        self._ok(cmd_id, sub)
        if sub.channel == "orderbook_delta" and added:
            self._snapshots(sub, added)
        elif sub.channel == "ticker" and sub.send_initial_snapshot and added:
            self._initial_tickers(sub, added)

    # ------------------------------------------------------------------------- data

    def send_events(self, events: list[Event]) -> None:
        """The exchange produced these events: frame them for this connection's subscriptions.

        After calling this, send :meth:`data_to_send`'s frames (or, while the connection is
        stalled, let them wait and watch :meth:`pending_bytes`).
        """
        if not self.subs:
            return
        markets = self.exchange.markets
        legacy = self.legacy
        faults = self.faults
        check = faults is not None and faults.active
        out = self._out
        n0 = len(out)
        subs = list(self.subs.values())
        for ev in events:
            channel = ev.channel
            for sub in subs:
                if sub.channel != channel or (
                    sub.markets is not None and ev.ticker not in sub.markets
                ):
                    continue
                body = encode_msg(ev, markets, sub.use_yes_price, legacy)
                if channel == "ticker":
                    out.append(ticker_frame(sub.sid, body))
                    continue
                sub.seq += 1
                frame = seq_frame(
                    "orderbook_delta"
                    if channel == "orderbook_delta"
                    else ("trade" if channel == "trade" else "market_lifecycle_v2"),
                    sub.sid,
                    sub.seq,
                    body,
                )
                if check and faults is not None:
                    fate = faults.on_sequenced()
                    if fate == SKIP:
                        continue
                    if fate == DUPLICATE:
                        out.append(frame)
                    elif fate == REORDER and self._held is None:
                        self._held = frame
                        continue
                out.append(frame)
                if self._held is not None:
                    out.append(self._held)
                    self._held = None
        self.data_frames += len(out) - n0

    def buffer_overflowed(self) -> None:
        """The connection's outbound buffer passed its bound: drop every subscription with
        error 25, as Kalshi does.

        After calling this, send :meth:`data_to_send`'s frames.
        """
        for sid in list(self.subs):
            sub = self.subs.pop(sid)
            self._out.append(self._error(None, CommandError(25), sub))

    def pending_bytes(self) -> int:
        """Bytes of the frames queued and not yet drained by :meth:`data_to_send`."""
        out = self._out
        # Size only what is new since the last call: a stalled connection holds thousands of
        # frames and is checked every tick.
        for k in range(self._sized, len(out)):
            self._out_bytes += len(out[k])
        self._sized = len(out)
        return self._out_bytes

    def data_to_send(self) -> list[bytes]:
        """The frames to send to the client, in order (empties the outbox)."""
        out, self._out = self._out, []
        self._sized = self._out_bytes = 0
        return out
