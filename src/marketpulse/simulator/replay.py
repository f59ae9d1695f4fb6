"""Replay a recorded feed through the simulator.

Recording format (written by ``marketpulse record``, see docs/interfaces.md §7): JSONL, one line
per frame the client received, in arrival order::

    {"ts_ms": <receive time, epoch ms>, "frame": "<the raw text frame>"}

``frame`` may also be an already parsed object. Lines that are not JSON, frames that are not
JSON, and command responses are skipped (and counted).

The replay does not forward recorded frames verbatim: it applies them to the simulator's own
books and emits what changed, so every connected client gets a consistent stream of its own:
a snapshot first (from the simulator's current book), then deltas, with ``sid``/``seq``
numbered per connection. A recorded snapshot (after a gap or a reconnect in the original
session) becomes the deltas that turn the current book into it; a recorded duplicate (same
``sid`` and ``seq`` twice in a row) is dropped; a delta that would take a level below zero is
clamped. Order-book prices are read in native terms (recordings are made without
``use_yes_price``, the recorder's default).
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from marketpulse.simulator._catalog import Catalog, Event, Market, Series, on_grid
from marketpulse.simulator._model import Event as ModelEvent
from marketpulse.simulator._model import ExchangeModel, Lifecycle, Trade
from marketpulse.simulator._units import ONE, parse_price, parse_size

__all__ = ["RecordedFrame", "ReplaySource", "catalog_from_recording", "read_recording"]

DATA_TYPES = frozenset(
    {"orderbook_snapshot", "orderbook_delta", "ticker", "trade", "market_lifecycle_v2"}
)


@dataclass(slots=True)
class RecordedFrame:
    """One data frame of a recording."""

    ts_ms: int
    frame: dict[str, Any]


def read_recording(path: str | Path) -> tuple[list[RecordedFrame], int]:
    """Read the data frames of a recording.

    Returns:
        The data frames in order, and how many lines were skipped.
    """
    frames: list[RecordedFrame] = []
    skipped = 0
    last_seq: dict[int, int] = {}
    with Path(path).open("rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
                raw = rec["frame"]
                frame = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
                ts_ms = int(rec["ts_ms"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                skipped += 1
                continue
            if not isinstance(frame, dict) or frame.get("type") not in DATA_TYPES:
                skipped += 1
                continue
            if not isinstance(frame.get("msg"), dict) or not frame["msg"].get("market_ticker"):
                skipped += 1
                continue
            sid, seq = frame.get("sid"), frame.get("seq")
            if isinstance(sid, int) and isinstance(seq, int):
                if last_seq.get(sid) == seq:
                    skipped += 1  # a duplicate in the original stream
                    continue
                last_seq[sid] = seq
            frames.append(RecordedFrame(ts_ms, frame))
    return frames, skipped


def _levels(msg: dict[str, Any], side: str) -> list[tuple[int, int]]:
    levels = msg.get(f"{side}_dollars_fp")
    if levels is None and msg.get(f"{side}_dollars") is not None:
        levels = msg[f"{side}_dollars"]  # transition era: [["0.0100", 250], ...]
    out: list[tuple[int, int]] = []
    for p, s in levels or []:
        out.append((parse_price(p), parse_size(s)))
    return out


class ReplaySource:
    """Recorded frames, released at their original pace (divided by ``speed``)."""

    def __init__(self, path: str | Path, speed: float = 1.0, loop: bool = False) -> None:
        """Load a recording.

        Args:
            path: The JSONL file.
            speed: 2.0 replays twice as fast.
            loop: Start again from the beginning when the recording ends.
        """
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.frames, self.skipped = read_recording(path)
        self.speed = speed
        self.loop = loop
        self.index = 0
        self.t0: float | None = None
        self.rounds = 0
        self.first_ts = self.frames[0].ts_ms if self.frames else 0

    @property
    def done(self) -> bool:
        """True when every frame has been replayed (and not looping)."""
        return self.index >= len(self.frames) and not self.loop

    def tickers(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(ticker, msg)`` of every recorded frame, in order."""
        for f in self.frames:
            yield f.frame["msg"]["market_ticker"], f.frame["msg"]

    def due(self, model: ExchangeModel, now: float, now_ms: int) -> list[ModelEvent]:
        """Apply every frame due by ``now`` (loop clock, seconds) and return the events."""
        out: list[ModelEvent] = []
        if not self.frames:
            return out
        if self.t0 is None:
            self.t0 = now
        while True:
            while self.index < len(self.frames):
                rf = self.frames[self.index]
                if self.t0 + (rf.ts_ms - self.first_ts) / 1000 / self.speed > now:
                    return out
                self.index += 1
                try:
                    self._apply(model, rf.frame, now_ms, out, self.rounds)
                except (KeyError, ValueError, TypeError, ArithmeticError):
                    self.skipped += 1
            if not self.loop:
                return out
            self.index = 0
            self.rounds += 1
            self.t0 = now

    @staticmethod
    def _apply(
        model: ExchangeModel,
        frame: dict[str, Any],
        now_ms: int,
        out: list[ModelEvent],
        rounds: int = 0,
    ) -> None:
        msg = frame["msg"]
        ticker = msg["market_ticker"]
        kind = frame["type"]
        if kind == "orderbook_snapshot":
            out += model.set_book(ticker, _levels(msg, "yes"), _levels(msg, "no"), now_ms)
        elif kind == "orderbook_delta":
            side = msg["side"]
            if side not in ("yes", "no"):
                raise ValueError(side)
            out += model.apply_delta(
                ticker, side, parse_price(msg["price_dollars"]), parse_size(msg["delta_fp"]), now_ms
            )
        elif kind == "trade":
            yes_price = parse_price(msg["yes_price_dollars"])
            taker = msg.get("taker_outcome_side") or msg.get("taker_side") or "yes"
            trade_id = str(msg.get("trade_id") or uuid.uuid4())
            if rounds:
                # A loop's trades are new trades: with the recorded ids again, a store (which
                # keeps one trade per id) would drop every round after the first.
                trade_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{trade_id}#{rounds}"))
            trade = Trade(
                ticker,
                now_ms,
                trade_id,
                yes_price,
                parse_size(msg["count_fp"]),
                taker,
            )
            model.record_trade(trade)
            out.append(trade)
        elif kind == "ticker":
            st = model.states[ticker]
            if msg.get("price_dollars") is not None:
                st.last_price = parse_price(msg["price_dollars"])
            if msg.get("volume_fp") is not None:
                st.volume = parse_size(msg["volume_fp"])
            if msg.get("open_interest_fp") is not None:
                st.open_interest = parse_size(msg["open_interest_fp"])
            tk = model.ticker_if_changed(ticker, now_ms)
            if tk is not None:
                out.append(tk)
            return
        elif kind == "market_lifecycle_v2":
            fields = {k: v for k, v in msg.items() if k not in ("market_ticker", "event_type")}
            event_type = str(msg.get("event_type", ""))
            _follow_lifecycle(model.states[ticker].market, event_type, fields, now_ms)
            out.append(Lifecycle(ticker, now_ms, event_type, fields))
            return
        tk = model.ticker_if_changed(ticker, now_ms) if kind == "trade" else None
        if tk is not None:
            out.append(tk)


_STATUS_OF_EVENT = {
    "created": "initialized",
    "activated": "active",
    "deactivated": "inactive",
    "determined": "determined",
    "settled": "finalized",
}


def _follow_lifecycle(market: Market, event_type: str, fields: dict[str, Any], now_ms: int) -> None:
    """Make the market's REST record say what a replayed lifecycle event announced: its
    status (a pause flag, when present, decides paused or not), close time and result."""
    paused = fields.get("is_deactivated")
    status = (
        ("inactive" if paused else "active")
        if isinstance(paused, bool)
        else _STATUS_OF_EVENT.get(event_type)
    )
    close_ts = fields.get("close_ts")
    if isinstance(close_ts, int) and not isinstance(close_ts, bool):
        market.close_ms = close_ts * 1000
    if isinstance(fields.get("result"), str) and fields["result"]:
        market.result = fields["result"]
    value = fields.get("settlement_value")
    if isinstance(value, str):
        with contextlib.suppress(ValueError, ArithmeticError):
            market.settlement_value = parse_price(value)
    if event_type == "settled":
        settled_ts = fields.get("settled_ts")
        if isinstance(settled_ts, int) and not isinstance(settled_ts, bool):
            market.settlement_ms = settled_ts * 1000
        else:
            market.settlement_ms = now_ms
    if status is not None:
        market.status = status
    market.updated_ms = now_ms


# The replayed market's price grid: the coarsest of these that holds every price recorded for it.
REPLAY_STRUCTURES = ("deci_cent", "center_deci_edge_centi_cent", "centi_cent")

_PRICE_FIELDS = (
    "price_dollars",  # a delta's level, a ticker's last trade
    "yes_price_dollars",
    "no_price_dollars",
    "yes_bid_dollars",
    "yes_ask_dollars",
)


def _recorded_prices(msg: dict[str, Any]) -> Iterator[int]:
    """Every price (price units) a recorded ``msg`` names: book levels, deltas, trades, tickers."""
    raw: list[Any] = [msg.get(name) for name in _PRICE_FIELDS]
    for side in ("yes", "no"):
        for key in (f"{side}_dollars_fp", f"{side}_dollars"):
            levels = msg.get(key)
            if isinstance(levels, list):
                raw += [lv[0] for lv in levels if isinstance(lv, list | tuple) and lv]
    for value in raw:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            try:
                yield parse_price(value)
            except (ValueError, ArithmeticError):
                continue


def _structure_for(prices: set[int]) -> str:
    """The coarsest replay structure whose grid holds every bid price of a market."""
    bids = [p for p in prices if 0 < p < ONE]
    for structure in REPLAY_STRUCTURES[:-1]:
        if all(on_grid(structure, p) for p in bids):
            return structure
    return REPLAY_STRUCTURES[-1]


def catalog_from_recording(source: ReplaySource, rng: random.Random) -> Catalog:
    """Markets, events and series named after the tickers a recording mentions.

    Each market's price grid is the coarsest that holds every price recorded for it, so a
    client checking prices against the REST ``price_ranges`` accepts the replayed books.
    """
    markets: dict[str, Market] = {}
    events: dict[str, Event] = {}
    series: dict[str, Series] = {}
    prices: dict[str, set[int]] = {}
    first_ts = source.first_ts
    for ticker, msg in source.tickers():
        prices.setdefault(ticker, set()).update(_recorded_prices(msg))
        if ticker in markets:
            continue
        event_ticker = ticker.rsplit("-", 1)[0] if "-" in ticker else ticker
        series_ticker = ticker.split("-", 1)[0]
        price = 0
        if msg.get("price_dollars") is not None:
            try:
                price = min(ONE, max(0, parse_price(msg["price_dollars"])))
            except (ValueError, ArithmeticError):
                price = 0
        market_id = msg.get("market_id") or str(uuid.UUID(int=rng.getrandbits(128), version=4))
        markets[ticker] = Market(
            ticker=ticker,
            event_ticker=event_ticker,
            series_ticker=series_ticker,
            market_id=str(market_id),
            title=ticker,
            subtitle="",
            yes_sub_title="",
            no_sub_title="",
            rules_primary="Replayed market.",
            strike_type="custom",
            floor_strike=None,
            cap_strike=None,
            structure="deci_cent",
            created_ms=first_ts,
            open_ms=first_ts,
            close_ms=first_ts + 86_400_000,
            expected_expiration_ms=first_ts + 86_400_000,
            initial_price=price,
            previous_price=price,
            previous_yes_bid=0,
            previous_yes_ask=ONE,
        )
        if event_ticker not in events:
            events[event_ticker] = Event(
                event_ticker,
                series_ticker,
                event_ticker,
                "",
                "Replay",
                False,
                first_ts + 86_400_000,
            )
        events[event_ticker].markets.append(ticker)
        if series_ticker not in series:
            series[series_ticker] = Series(
                series_ticker, series_ticker, "Replay", "custom", [], "recording", ""
            )
    for ticker, market in markets.items():
        market.structure = _structure_for(prices[ticker])
    return Catalog(series, events, markets)
