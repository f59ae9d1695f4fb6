"""The :class:`Simulator`: exchange model + server + fault controls + replay, one object."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import random
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from marketpulse._aio import cancel_and_wait
from marketpulse.kalshi.auth import generate_private_key_pem, load_public_key
from marketpulse.simulator._book import Book
from marketpulse.simulator._catalog import Catalog, Market, build_catalog, step_at
from marketpulse.simulator._faults import Faults, FaultSettings
from marketpulse.simulator._history import PastPrices
from marketpulse.simulator._model import Delta, Event, ExchangeModel, Ticker
from marketpulse.simulator._transport import Connection
from marketpulse.simulator._units import ONE, price_dec, size_dec

log = logging.getLogger("marketpulse.simulator")

KEY_FILE = "kalshi-sim-private-key.pem"
KEY_ID_FILE = "kalshi-sim-key-id"


@dataclass
class SimulatorConfig:
    """Simulator settings (the CLI flags map onto these).

    Attributes:
        host: Interface to bind (loopback by default).
        port: TCP port; 0 picks a free one.
        markets: Number of tradable markets.
        rate: Model messages per second (deltas + trades + tickers over all markets).
        seed: Seed of the model's random generator.
        public_key_path: Verify handshakes against this PEM public key instead of generating a pair.
        key_id: Required ``KALSHI-ACCESS-KEY`` (generated when a pair is generated; None = any).
        key_dir: Where the generated private key goes (reused if one is already there).
        allow_anonymous: Accept unsigned handshakes (private channels then answer error 9).
        ping_interval: Seconds between ``heartbeat`` pings.
        tick_interval: Seconds between generation/flush ticks.
        max_buffer_bytes: Per-connection outbound buffer; beyond it subscriptions get error 25.
        legacy: Also emit the integer-cent fields Kalshi removed in March 2026.
        closed_markets: Extra finalized markets (for status filters).
        epoch_ms: Base time of the catalog (close times); None = now.
        max_skew_ms: Reject handshake timestamps further than this from now (None = no check).
        replay: Replay this recording instead of generating order flow.
        speed: Replay speed factor.
        replay_loop: Start the recording over when it ends.
        faults: Standing faults (rates and periods).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    markets: int = 50
    rate: float = 1000.0
    seed: int = 1
    public_key_path: str | None = None
    key_id: str | None = None
    key_dir: str | None = None
    allow_anonymous: bool = False
    ping_interval: float = 10.0
    tick_interval: float = 0.005
    max_buffer_bytes: int = 8 * 1024 * 1024
    legacy: bool = False
    closed_markets: int = 0
    epoch_ms: int | None = None
    max_skew_ms: int | None = None
    replay: str | None = None
    speed: float = 1.0
    replay_loop: bool = False
    faults: FaultSettings = field(default_factory=FaultSettings)


class Simulator:
    """A Kalshi-compatible exchange on one port: WS v2, REST v2 and ``/_sim`` controls."""

    def __init__(self, config: SimulatorConfig | None = None, **overrides: Any) -> None:
        """Build the catalog and the model (deterministic for ``config.seed``).

        Args:
            config: Settings; keyword overrides are applied on top.
            **overrides: Any :class:`SimulatorConfig` field.
        """
        cfg = dataclasses.replace(
            config or SimulatorConfig(), **overrides
        )  # caller's copy untouched
        self.config = cfg
        self.rng = random.Random(cfg.seed)
        self.replay_source: Any = None
        self.epoch_ms = cfg.epoch_ms if cfg.epoch_ms is not None else int(time.time() * 1000)
        self._past: dict[str, PastPrices] = {}
        if cfg.replay:
            from marketpulse.simulator.replay import ReplaySource, catalog_from_recording

            self.replay_source = ReplaySource(cfg.replay, speed=cfg.speed, loop=cfg.replay_loop)
            self.catalog: Catalog = catalog_from_recording(self.replay_source, self.rng)
        else:
            self.catalog = build_catalog(self.rng, cfg.markets, self.epoch_ms, cfg.closed_markets)
        self.model = ExchangeModel(
            self.catalog,
            self.rng,
            empty_books=self.replay_source is not None,
            # Deterministic for --seed and --epoch-ms, as the rest of the stream; a restart
            # (a new epoch) makes new trade ids, not the last run's again.
            trade_id_salt=int.from_bytes(
                hashlib.blake2b(str(self.epoch_ms).encode(), digest_size=16).digest()
            ),
        )
        self.faults = Faults(cfg.faults, random.Random(cfg.seed ^ 0x5EED_FA17))
        self.paused = False
        self.key_id: str | None = cfg.key_id
        self.private_key_path: str | None = None
        self.public_key: rsa.RSAPublicKey | None = None
        self._connections: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = cfg.port
        self.messages_generated = 0
        # (stamp, wall-clock ms just before its frames were written) per generated tick. Kalshi
        # stamps are whole ms (``ts_ms``), so a latency measured from the stamp alone is up to
        # 1 ms long; benchmarks measure from this instead (GET /_sim/sends).
        self.send_log: deque[tuple[int, float]] = deque(maxlen=200_000)
        self.started_at = 0.0

    # ------------------------------------------------------------------------ lifecycle

    def _load_keys(self) -> None:
        cfg = self.config
        if cfg.public_key_path:
            self.public_key = load_public_key(Path(cfg.public_key_path).read_bytes())
            return
        key_dir = (
            Path(cfg.key_dir) if cfg.key_dir else Path(tempfile.mkdtemp(prefix="marketpulse-sim-"))
        )
        key_dir.mkdir(parents=True, exist_ok=True)
        key_path = key_dir / KEY_FILE
        id_path = key_dir / KEY_ID_FILE
        if key_path.exists() and id_path.exists():
            pem = key_path.read_bytes()
            self.key_id = cfg.key_id or id_path.read_text().strip()
        else:
            pem = generate_private_key_pem()
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            self.key_id = cfg.key_id or str(uuid.uuid4())
            id_path.write_text(self.key_id + "\n")
        self.private_key_path = str(key_path)
        self.public_key = load_public_key(pem)

    async def start(self) -> None:
        """Generate or load keys, bind the port and start the order flow."""
        self._load_keys()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self), self.config.host, self.config.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.faults.bind(self._drop, self._stall)
        self.started_at = loop.time()
        self._task = asyncio.create_task(self._run(), name="marketpulse-simulator")

    async def stop(self) -> None:
        """Stop the order flow, close every connection and the listening socket."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for conn in list(self._connections):
            conn.abort()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        """REST base, ``.../trade-api/v2``."""
        return f"{self.base_url}/trade-api/v2"

    @property
    def ws_url(self) -> str:
        """WebSocket URL, ``ws://.../trade-api/ws/v2``."""
        return f"ws://{self.config.host}:{self.port}/trade-api/ws/v2"

    # --------------------------------------------------------------- exchange view (session)

    @property
    def markets(self) -> dict[str, Market]:
        """Every market by ticker."""
        return self.catalog.markets

    def book(self, ticker: str) -> Book:
        """The live book of a market."""
        return self.model.book(ticker)

    def current_ticker(self, ticker: str) -> Ticker:
        """A ticker event with the market's current fields."""
        st = self.model.states[ticker]
        return Ticker(ticker, int(time.time() * 1000), st.ticker_fields(), st.last_trade_size)

    # --------------------------------------------------------------------------- public

    def book_levels(self, ticker: str) -> dict[str, list[tuple[Decimal, Decimal]]]:
        """The exact book in Kalshi's native bid terms, ascending by price.

        Returns:
            ``{"yes": [(price, size), ...], "no": [...]}`` with Decimal dollars and contracts.
        """
        book = self.model.book(ticker)
        return {
            side: [(price_dec(p), size_dec(s)) for p, s in book.levels(side)]
            for side in ("yes", "no")
        }

    def pause(self) -> None:
        """Stop generating order flow (connections, pings and commands carry on)."""
        self.paused = True

    def resume(self) -> None:
        """Resume the order flow."""
        self.paused = False

    def advance(self, n_messages: int) -> int:
        """Generate about ``n_messages`` model messages now and send them; returns how many."""
        stamp = int(time.time() * 1000)
        events = self.model.generate(n_messages, stamp)
        self._note_send(stamp, events)
        self._dispatch(events)
        return len(events)

    def _note_send(self, stamp: int, events: list[Event]) -> None:
        log = self.send_log
        if events and (not log or log[-1][0] != stamp):
            log.append((stamp, time.time() * 1000))

    def set_market_status(self, ticker: str, status: str) -> None:
        """Change a market's status and announce it on ``market_lifecycle_v2``."""
        if ticker not in self.catalog.markets:
            raise KeyError(f"unknown market {ticker}")
        self._dispatch(self.model.set_status(ticker, status, int(time.time() * 1000)))

    def past(self, ticker: str) -> PastPrices:
        """The generated past of a market (candlesticks before the epoch)."""
        past = self._past.get(ticker)
        if past is None:
            past = PastPrices(self.catalog.markets[ticker], self.epoch_ms, self.config.seed)
            self._past[ticker] = past
        return past

    def inject_bad_book(self, ticker: str, kind: str = "crossed", hold: float = 0.0) -> None:
        """Send every subscriber a delta that makes its copy of ``ticker``'s book impossible,
        without changing the simulator's own book (so a fresh snapshot heals it).

        ``kind``: ``crossed`` (a NO bid that locks the best YES bid), ``off_tick`` (a YES bid
        between two ticks of the market's grid) or ``out_of_range`` (a YES bid at $1).
        ``hold``: then stall every connection's writes for that many seconds, so the snapshot
        that heals the book comes that late (a test can see the book withheld meanwhile).
        """
        if ticker not in self.catalog.markets:
            raise KeyError(f"unknown market {ticker}")
        market = self.catalog.markets[ticker]
        yes = self.model.book(ticker).levels("yes")
        best = yes[-1][0] if yes else step_at(market.structure, ONE // 2)
        if kind == "crossed":
            side, price = "no", ONE - best
        elif kind == "off_tick":
            side, price = "yes", best - 1  # one 1/10,000 below a tick: on no coarser grid
        elif kind == "out_of_range":
            side, price = "yes", ONE
        else:
            raise ValueError(f"unknown bad_book kind {kind!r}")
        self._dispatch([Delta(ticker, int(time.time() * 1000), side, price, 100)])
        if hold > 0:
            self.faults.stall(hold)

    @property
    def connections(self) -> int:
        """Open WebSocket connections."""
        return len(self._connections)

    def stats(self) -> dict[str, Any]:
        """Counters for tests and ``GET /_sim/stats``."""
        return {
            "connections": len(self._connections),
            "messages_generated": self.messages_generated,
            "paused": self.paused,
            "faults": dict(self.faults.counters),
            "markets": len(self.catalog.markets),
            "key_id": self.key_id,
        }

    def control(self, command: dict[str, Any]) -> Any:
        """Apply one control action (the body of ``POST /_sim/control``).

        Actions: ``pause``, ``resume``, ``drop_connection`` (``count``), ``skip_seq``
        (``count``), ``duplicate`` (``count``), ``reorder`` (``count``), ``malformed``
        (``count``), ``stall``
        (``seconds``), ``refuse_auth`` (``count``), ``clear_faults``, ``advance`` (``count``),
        ``set_status`` (``ticker``, ``status``), ``set_rate`` (``rate``).
        """
        action = command["action"]
        raw_count = command.get("count")
        if raw_count is not None and (
            not isinstance(raw_count, int) or isinstance(raw_count, bool)
        ):
            raise TypeError("count must be an integer")
        count: int = 1 if raw_count is None else raw_count
        match action:
            case "pause":
                self.pause()
            case "resume":
                self.resume()
            case "drop_connection":
                return self.faults.drop_connection(command.get("count"))
            case "skip_seq":
                self.faults.skip_seq(count)
            case "duplicate":
                self.faults.duplicate(count)
            case "reorder":
                self.faults.reorder(count)
            case "malformed":
                self.faults.malformed(count)
            case "stall":
                return self.faults.stall(float(command.get("seconds", 1.0)))
            case "refuse_auth":
                self.faults.refuse_auth(count)
            case "clear_faults":
                self.faults.clear()
            case "advance":
                return self.advance(int(count))
            case "set_status":
                self.set_market_status(str(command["ticker"]), str(command["status"]))
            case "bad_book":
                self.inject_bad_book(
                    str(command["ticker"]),
                    str(command.get("kind", "crossed")),
                    float(command.get("hold", 0.0)),
                )
            case "set_rate":
                rate = float(command["rate"])
                if rate < 0:
                    raise ValueError("rate must be >= 0")
                self.config.rate = rate
            case _:
                raise ValueError(f"unknown action {action!r}")
        return None

    # ------------------------------------------------------------------------- internals

    def _drop(self, count: int | None) -> int:
        conns = list(self._connections)[: count if count is not None else None]
        for c in conns:
            c.abort()
        self.faults.counters["dropped"] += len(conns)
        return len(conns)

    def _stall(self, seconds: float) -> int:
        until = asyncio.get_running_loop().time() + seconds
        for c in self._connections:
            c.stalled_until = until
        self.faults.counters["stalled"] += len(self._connections)
        return len(self._connections)

    def _dispatch(self, events: list[Event]) -> None:
        self.messages_generated += len(events)
        for conn in list(self._connections):
            session = conn.session
            if session is None:
                continue
            try:
                if events:
                    session.send_events(events)
                    conn.check_buffer()
                conn.flush()
            except Exception:  # one broken connection must not stop the exchange
                log.exception("simulator: dropping a connection after an error")
                conn.abort()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        last = loop.time()
        next_ping = last + cfg.ping_interval
        stall_every = cfg.faults.stall_every
        next_stall = last + stall_every if stall_every > 0 else float("inf")
        budget = 0.0
        while True:
            await asyncio.sleep(cfg.tick_interval)
            now = loop.time()
            now_ms = int(time.time() * 1000)
            events: list[Event] = []
            if not self.paused:
                if self.replay_source is not None:
                    events = self.replay_source.due(self.model, now, now_ms)
                elif cfg.rate > 0:
                    # A loop that was not scheduled for a while catches up (the owed budget is
                    # kept up to one second), but at most 20 ms worth per tick, so a backlog never
                    # becomes one huge burst that starves the socket writes.
                    budget = min(budget + cfg.rate * (now - last), cfg.rate + 1)
                    n = min(int(budget), int(cfg.rate * 0.02) + 1)
                    if n > 0:
                        events = self.model.generate(n, now_ms)
                        budget -= len(events)
                        self._note_send(now_ms, events)
            last = now
            self._dispatch(events)
            if now >= next_stall:
                next_stall = now + stall_every
                self.faults.stall(cfg.faults.stall_seconds)
            if now >= next_ping:
                next_ping = now + cfg.ping_interval
                for conn in list(self._connections):
                    try:
                        conn.ping()
                    except Exception:
                        log.exception("simulator: ping failed")
                        conn.abort()
