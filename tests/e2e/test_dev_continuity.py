"""``marketpulse dev`` heals like a production deployment: a child that dies is restarted, a
restart of dev itself on its data dir serves nothing stale as live, and dev gives up only on a
child that keeps dying. Books are sampled against the simulator's truth throughout (see
``continuity``)."""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from marketpulse.testing import BookWatch, DevProcess, LocalSystem, free_port

from .continuity import check_fault

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(500),
    pytest.mark.skipif(
        importlib.util.find_spec("marketpulse.reactive.server") is None,
        reason="needs the store server (marketpulse serve)",
    ),
]


def _dev(data: Path, ports: dict[str, int]) -> DevProcess:
    return DevProcess(
        data,
        port=ports["store"],
        temporal_port=ports["temporal"],
        ui_port=ports["ui"],
        simulator_port=ports["sim"],
        sim_markets=4,
        sim_rate=40,
        seed=3,
    )


def _ready(dev: DevProcess) -> dict[str, str]:
    lines = dev.ready_file.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def _pid_of(dev: DevProcess, name: str) -> int:
    info = _ready(dev)
    return dict(zip(info["names"].split(), map(int, info["pids"].split()), strict=True))[name]


def _until(check: object, timeout: float, what: str) -> float:
    start = time.monotonic()
    while True:
        try:
            if check():  # type: ignore[operator]
                return time.monotonic() - start
        except Exception:
            pass
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not within {timeout:g}s")
        time.sleep(0.3)


@pytest.fixture
def ports() -> dict[str, int]:
    return {"store": free_port(), "temporal": free_port(), "ui": free_port(), "sim": free_port()}


@pytest.fixture
def dev(tmp_path: Path, ports: dict[str, int]) -> Iterator[tuple[DevProcess, LocalSystem]]:
    proc = _dev(tmp_path / "data", ports).start(timeout=180)
    view = LocalSystem.attach(
        tmp_path / "view", store_url=proc.url, sim_url=f"http://127.0.0.1:{ports['sim']}"
    )
    try:
        yield proc, view
    finally:
        proc.stop()


def _tickers(view: LocalSystem) -> list[str]:
    return view.sim_markets()


def test_a_child_of_dev_that_dies_is_restarted(dev: tuple[DevProcess, LocalSystem]) -> None:
    proc, view = dev
    tickers = _tickers(view)
    _until(lambda: view.converged(tickers), 60, "books served")
    with BookWatch(view, tickers) as watch:
        for child in ("worker", "store"):
            at = time.monotonic()
            pid = _pid_of(proc, child)
            os.killpg(pid, signal.SIGKILL)
            if child == "worker":
                # The store notices by itself: the dead worker's lease lapses.
                _until(lambda t=at: watch.first_none_served(t) is not None, 15, "books stale")
            _until(lambda p=pid, c=child: _pid_of(proc, c) != p, 60, f"{child} restarted by dev")
            _until(lambda: view.converged(tickers), 120, f"books right after {child} died")
            back = time.monotonic() - at
            check_fault(watch, view, tickers, f"dev's {child} SIGKILLed", at, back_s=back)
    assert proc.poll() is None  # dev itself never stopped
    assert _ready(proc)["restarts"] == "2"
    assert "worker exited with" in proc.log() and "store restarted" in proc.log()


def test_dev_restarted_on_its_data_dir_serves_nothing_stale(
    tmp_path: Path, ports: dict[str, int]
) -> None:
    data = tmp_path / "data"
    proc = _dev(data, ports).start(timeout=180)
    view = LocalSystem.attach(
        tmp_path / "view", store_url=proc.url, sim_url=f"http://127.0.0.1:{ports['sim']}"
    )
    tickers = _tickers(view)
    try:
        _until(lambda: view.converged(tickers), 60, "books served")
    finally:
        proc.stop()
    time.sleep(5)  # the simulator's books move on while everything is down
    with BookWatch(view, tickers) as watch:
        at = time.monotonic()
        proc = _dev(data, ports).start(timeout=180)
        try:
            back = _until(lambda: view.converged(tickers), 90, "books right after the restart")
            check_fault(
                watch, view, tickers, "marketpulse dev restarted on its data dir", at, back_s=back
            )
        finally:
            proc.stop()


def test_dev_gives_up_on_a_child_that_keeps_dying(dev: tuple[DevProcess, LocalSystem]) -> None:
    proc, _view = dev
    deaths = 0
    end = time.monotonic() + 150
    while proc.poll() is None and time.monotonic() < end:
        pid = _pid_of(proc, "simulator")
        try:
            os.killpg(pid, signal.SIGKILL)
            deaths += 1
        except ProcessLookupError:
            pass
        # Wait for the restart (a new pid in the ready file) or for dev to give up.
        _until(lambda p=pid: proc.poll() is not None or _pid_of(proc, "simulator") != p, 60, "x")
    assert proc.poll() == 1
    assert deaths == 6
    assert "simulator keeps failing: exited 6 times" in proc.log()
