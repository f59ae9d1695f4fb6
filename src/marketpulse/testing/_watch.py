"""Continuity under faults: the served books against the simulator's truth, sampled throughout
a fault, and the trades the store holds against the ones the simulator made (the e2e
continuity tests and ``bench/continuity.py`` measure with these)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from marketpulse.marketdata.limits import MAX_RESULTS
from marketpulse.testing._system import LocalSystem

__all__ = ["BookWatch", "missing_trades", "wait_for_trades"]


@dataclass
class Sample:
    """One sampling round: per ticker, whether a book was served and whether it was wrong."""

    at: float
    served: dict[str, bool]
    wrong: dict[str, bool]


@dataclass
class BookWatch:
    """Samples every market's served book (``getOrderbook``) and the simulator's, in a thread;
    a context manager.

    A market is *served wrong* in a sample when the store serves a book (live: non-null) that
    differs from the simulator's. A store that does not answer serves nothing; a served book
    the simulator cannot be asked about counts as wrong.

    Args:
        system: The system to watch (:meth:`LocalSystem.attach` for one started elsewhere).
        tickers: The markets to compare.
        interval: Seconds between sampling rounds.
    """

    system: LocalSystem
    tickers: Sequence[str]
    interval: float = 0.2
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> BookWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            at = time.monotonic()
            served: dict[str, bool] = {}
            wrong: dict[str, bool] = {}
            for t in self.tickers:
                try:
                    book = self.system.store_book(t)
                except Exception:
                    book = None
                served[t] = book is not None
                if book is None:
                    wrong[t] = False
                    continue
                try:
                    wrong[t] = book != self.system.sim_book(t)
                except Exception:
                    # The truth is not there to compare (the simulator restarts): count the
                    # served book as wrong, the strict reading.
                    wrong[t] = True
            self.samples.append(Sample(at, served, wrong))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - at)))

    def longest_wrong_live(self, since: float = 0.0) -> float:
        """The longest time any market was served a wrong book, from its first wrong sample to
        the first later sample where it was right or not served (an upper bound)."""
        longest = 0.0
        for t in self.tickers:
            start: float | None = None
            for s in self.samples:
                if s.at < since:
                    continue
                if s.wrong[t]:
                    start = s.at if start is None else start
                elif start is not None:
                    longest = max(longest, s.at - start)
                    start = None
            if start is not None:
                longest = max(longest, self.samples[-1].at - start)
        return longest

    def first_none_served(self, since: float) -> float | None:
        """Seconds from ``since`` to the first sample serving no book at all."""
        for s in self.samples:
            if s.at >= since and not any(s.served.values()):
                return s.at - since
        return None

    def first_all_right(self, since: float) -> float | None:
        """Seconds from ``since`` to the first sample serving every book, all right."""
        for s in self.samples:
            if s.at >= since and all(s.served.values()) and not any(s.wrong.values()):
                return s.at - since
        return None


def _ms(created: str) -> float:
    return dt.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp() * 1000.0


def missing_trades(system: LocalSystem, tickers: Sequence[str]) -> tuple[int, int, int]:
    """(trades the simulator made that the store lacks, trades stored twice, trades compared).

    The store answers at most ``MAX_RESULTS`` newest trades per market: a full answer is
    compared with the simulator's trades after its oldest one.
    """
    made: dict[str, dict[str, float]] = {t: {} for t in tickers}
    for trade in system.sim_trades():
        if trade["ticker"] in made:
            made[trade["ticker"]][trade["trade_id"]] = _ms(trade["created_time"])
    lost = twice = compared = 0
    for t in tickers:
        stored = system.store_trades(t)
        ids = [x["id"] for x in stored]
        twice += len(ids) - len(set(ids))
        oldest = min((x["timestamp"] for x in stored), default=0.0)
        window = len(stored) >= MAX_RESULTS
        # Strictly after the oldest returned: trades sharing its millisecond may be just past
        # the answer's end.
        expected = {i for i, ms in made[t].items() if not window or ms > oldest}
        compared += len(expected)
        lost += len(expected - set(ids))
    return lost, twice, compared


def wait_for_trades(
    system: LocalSystem, tickers: Sequence[str], timeout: float = 40.0
) -> tuple[int, int, int]:
    """:func:`missing_trades` once nothing is missing, or at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = missing_trades(system, tickers)
        if result[0] == 0 or time.monotonic() > deadline:
            return result
        time.sleep(1.0)
