"""The harness's process core: a child is stopped with its whole process group (no orphan
survives, even when its launcher is killed), and its start-up errors carry its log's tail."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from marketpulse._process import ephemeral_ports
from marketpulse.testing import ManagedProcess, free_port, port_open
from proctree import alive

# A child that starts a grandchild, ignores SIGTERM, and reports the grandchild's pid.
_STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1], "w").write(str(g.pid))
time.sleep(600)
"""


def wait_file(path: Path) -> str:
    end = time.monotonic() + 20
    while not path.exists() or not path.read_text():
        assert time.monotonic() < end
        time.sleep(0.05)
    return path.read_text()


def test_stop_kills_the_group_even_when_sigterm_is_ignored(tmp_path: Path) -> None:
    pidfile = tmp_path / "g.pid"
    p = ManagedProcess(
        "stubborn", [sys.executable, "-c", _STUBBORN, str(pidfile)], log_path=tmp_path / "s.log"
    ).start()
    grandchild = int(wait_file(pidfile))
    assert alive(p.pid) and alive(grandchild)
    code = p.stop(timeout=1.0)
    assert code is not None and code < 0  # killed
    end = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < end:
        time.sleep(0.05)
    assert not alive(grandchild)


def test_child_dies_with_its_parent(tmp_path: Path) -> None:
    # The launcher (a middle process here) is SIGKILLed; its ManagedProcess child must follow.
    pidfile = tmp_path / "c.pid"
    launcher = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parents[2] / "src")!r})
from marketpulse.testing import ManagedProcess
p = ManagedProcess("c", [sys.executable, "-c", "import time; time.sleep(600)"]).start()
open({str(pidfile)!r}, "w").write(str(p.pid))
time.sleep(600)
"""
    mid = ManagedProcess("launcher", [sys.executable, "-c", launcher]).start()
    child = int(wait_file(pidfile))
    assert alive(child)
    os.kill(mid.pid, 9)
    mid.proc.wait(5)  # type: ignore[union-attr]
    end = time.monotonic() + 5
    while alive(child) and time.monotonic() < end:
        time.sleep(0.05)
    assert not alive(child)


def test_wait_ready_reports_a_dead_process(tmp_path: Path) -> None:
    p = ManagedProcess("dies", [sys.executable, "-c", "raise SystemExit(3)"]).start()
    port = free_port()
    try:
        p.wait_ready(lambda: port_open(port), 10.0)
    except RuntimeError as exc:
        assert "dies exited with 3" in str(exc)
    else:
        raise AssertionError("expected RuntimeError")


def test_a_process_that_dies_at_start_is_reported_with_the_end_of_its_log(
    tmp_path: Path,
) -> None:
    # Its log is often in a temporary folder removed right after: the message must carry it.
    script = "print('line one'); print('OSError: address already in use', flush=True); exit(1)"
    log = tmp_path / "dies.log"
    p = ManagedProcess("dies", [sys.executable, "-c", script], log_path=log).start()
    port = free_port()
    try:
        p.wait_ready(lambda: port_open(port), 10.0)
    except RuntimeError as exc:
        message = str(exc)
    else:
        raise AssertionError("expected RuntimeError")
    finally:
        p.stop()
    assert "dies exited with 1" in message
    assert message.endswith("line one\nOSError: address already in use")
    assert str(log) in message


def test_free_port_is_outside_the_ephemeral_range_free_and_never_handed_out_twice() -> None:
    # An ephemeral port can be taken by any outgoing connection before the child binds it.
    low, high = ephemeral_ports()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if low <= p <= high]
    assert not [p for p in ports if port_open(p)]
