"""A benchmark stand-in for test_bench_children.py: starts one spawn child the way the
benchmarks' fleets do, prints its pid, then waits to be killed."""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _clients import _exit_with_parent


def child(guard: bool) -> None:
    if guard:
        _exit_with_parent()
    time.sleep(30)


if __name__ == "__main__":
    proc = mp.get_context("spawn").Process(target=child, args=(sys.argv[1] == "guarded",))
    proc.start()
    time.sleep(1.0)  # the child is past its start-up
    print(proc.pid, flush=True)
    time.sleep(60)
