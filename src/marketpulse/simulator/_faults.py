"""Fault injection: scripted from tests (``sim.faults``), over HTTP, or random from CLI flags."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

SEND, SKIP, DUPLICATE, REORDER = 0, 1, 2, 3


@dataclass
class FaultSettings:
    """Standing (random or periodic) faults, usually from CLI flags.

    Attributes:
        fault_rate: Probability per sequenced data frame of a skipped seq or a duplicate.
        drop_every: Drop a connection after every N data frames sent on it (0 = never).
        malformed_every: Send a malformed frame after every N data frames (0 = never).
        stall_every: Stall every connection for ``stall_seconds`` every N seconds (0 = never).
        stall_seconds: Length of a periodic stall.
    """

    fault_rate: float = 0.0
    drop_every: int = 0
    malformed_every: int = 0
    stall_every: float = 0.0
    stall_seconds: float = 1.0


@dataclass
class Faults:
    """Pending one-shot faults and the counters of faults that happened.

    One-shot faults are global: the next sequenced frame(s) on any connection take them. Tests
    usually hold one connection, so "the next frame" is well defined for them.
    """

    settings: FaultSettings = field(default_factory=FaultSettings)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    counters: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("skipped", "duplicated", "reordered", "malformed", "dropped", "stalled", "refused"),
            0,
        )
    )
    _skip: int = 0
    _dup: int = 0
    _reorder: int = 0
    _malformed: int = 0
    _refuse: int = 0
    _drop_cb: Callable[[int | None], int] | None = None
    _stall_cb: Callable[[float], int] | None = None

    # ------------------------------------------------------------------ scripted (public)

    def skip_seq(self, count: int = 1) -> None:
        """Withhold the next ``count`` sequenced data frames; their seq numbers are used up."""
        self._skip += max(0, count)

    def duplicate(self, count: int = 1) -> None:
        """Send each of the next ``count`` sequenced data frames twice (same seq)."""
        self._dup += max(0, count)

    def reorder(self, count: int = 1) -> None:
        """Hold each of the next ``count`` sequenced data frames back behind the one after it."""
        self._reorder += max(0, count)

    def malformed(self, count: int = 1) -> None:
        """Send ``count`` frames that are not valid JSON, ahead of the next data frames."""
        self._malformed += max(0, count)

    def refuse_auth(self, count: int = 1) -> None:
        """Answer the next ``count`` handshakes 401 even when correctly signed (-1: until cleared)."""
        self._refuse = count

    def drop_connection(self, count: int | None = None) -> int:
        """Abort open WebSocket connections (all, or the ``count`` oldest); returns how many."""
        return self._drop_cb(count) if self._drop_cb else 0

    def stall(self, seconds: float) -> int:
        """Stop writing to every open connection (pings too) for ``seconds``; returns how many."""
        return self._stall_cb(seconds) if self._stall_cb else 0

    def clear(self) -> None:
        """Forget pending one-shot faults (standing settings stay)."""
        self._skip = self._dup = self._reorder = self._malformed = self._refuse = 0

    # ------------------------------------------------------------------ hooks (internal)

    def on_sequenced(self) -> int:
        """Decide the fate of one sequenced data frame: SEND, SKIP, DUPLICATE or REORDER."""
        if self._skip:
            self._skip -= 1
            self.counters["skipped"] += 1
            return SKIP
        if self._dup:
            self._dup -= 1
            self.counters["duplicated"] += 1
            return DUPLICATE
        if self._reorder:
            self._reorder -= 1
            self.counters["reordered"] += 1
            return REORDER
        rate = self.settings.fault_rate
        if rate and self.rng.random() < rate:
            if self.rng.random() < 0.5:
                self.counters["skipped"] += 1
                return SKIP
            self.counters["duplicated"] += 1
            return DUPLICATE
        return SEND

    @property
    def active(self) -> bool:
        """Whether any per-frame fault could fire (lets the hot path skip the call)."""
        return bool(self._skip or self._dup or self._reorder or self.settings.fault_rate)

    def take_malformed(self) -> bool:
        """True (once per pending fault) when a malformed frame should go out now."""
        if self._malformed:
            self._malformed -= 1
            self.counters["malformed"] += 1
            return True
        return False

    def take_refuse(self) -> bool:
        """True when this handshake must be refused."""
        if self._refuse:
            if self._refuse > 0:
                self._refuse -= 1
            self.counters["refused"] += 1
            return True
        return False

    def bind(self, drop: Callable[[int | None], int], stall: Callable[[float], int]) -> None:
        """Connect the connection-level faults to a running server."""
        self._drop_cb = drop
        self._stall_cb = stall
