"""Child processes are stopped with their whole process group: no orphan survives."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from marketpulse.pipeline._procs import ManagedProcess, free_port, wait_for_port

# A child that starts a grandchild, ignores SIGTERM, and reports the grandchild's pid.
_STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1], "w").write(str(g.pid))
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


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
from marketpulse.pipeline._procs import ManagedProcess
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


def test_wait_for_port_reports_a_dead_process(tmp_path: Path) -> None:
    p = ManagedProcess("dies", [sys.executable, "-c", "raise SystemExit(3)"]).start()
    try:
        wait_for_port(free_port(), 10.0, p)
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
    try:
        wait_for_port(free_port(), 10.0, p)
    except RuntimeError as exc:
        message = str(exc)
    else:
        raise AssertionError("expected RuntimeError")
    finally:
        p.stop()
    assert "dies exited with 1" in message
    assert message.endswith("line one\nOSError: address already in use")
    assert str(log) in message
