"""The 1,000 msgs/s latency run with a stalling disk: the store's event loop must not stall.

``bench/latency.py`` at 1,000 msgs/s (1,000 subscribers; 200 with ``--quick``) while the
store's SQLite writer sleeps 300 ms on one flush every 2 s (``MARKETPULSE_TEST_SLOW_DISK_S``,
``reactive/persistence/_slow_disk.py``), Redis pub/sub beside it in the same run. Goal (issue
15): the store's event-loop lag p999 <= 5 ms, queries answered and pushes flowing throughout.
Its figures (``slow_disk.json``) carry the loop's lag over time, plotted in
``bench/results/loop_lag.png``. Extra arguments go to ``latency.py`` (e.g.
``--inline-writes 64`` for the store's old inline fsync, to compare).
"""

from __future__ import annotations

import asyncio
import sys

import latency

if __name__ == "__main__":
    extra = sys.argv[1:]
    quick = "--quick" in extra
    window = ["--window", "4" if quick else "10"] if "--window" not in extra else []
    sys.argv = [
        sys.argv[0],
        "--rates",
        "1000",
        "--slow-disk",
        "0.3",
        "--slow-disk-every",
        "2",
        *window,
        *extra,
    ]
    asyncio.run(latency.main())
