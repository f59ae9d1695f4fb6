"""HAProxy in front of store nodes: the template renders a configuration HAProxy accepts,
the checked-in example is its rendering, and the real HAProxy balances, health-checks and
stops with its process group."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from marketpulse._balancer import haproxy_binary, render_haproxy_config
from marketpulse.testing import BalancerProcess, StoreProcess
from polling import wait_until
from proctree import alive

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "haproxy"


def test_the_checked_in_example_is_the_templates_rendering(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["render.py"])
    runpy.run_path(str(DEPLOY / "render.py"), run_name="__main__")
    assert capsys.readouterr().out == (DEPLOY / "haproxy.cfg").read_text()


def test_haproxy_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    cfg = tmp_path / "h.cfg"
    cfg.write_text(
        render_haproxy_config(
            [("a", "127.0.0.1:1"), ("b", "localhost:2"), ("c", "[::1]:3")],
            bind="127.0.0.1:3210",
            socket_path=str(tmp_path / "s.sock"),
        )
    )
    check = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    text = cfg.read_text()
    for needed in (
        "balance leastconn",
        "option httpchk GET /health",
        "timeout tunnel 1h",
        "on-marked-down shutdown-sessions",
    ):
        assert needed in text


@pytest.mark.parametrize(
    ("nodes", "error"),
    [
        ([], "at least one"),
        ([("a b", "127.0.0.1:1")], "bad node name"),
        ([("a/b", "127.0.0.1:1")], "bad node name"),
        ([("a", "127.0.0.1")], "bad node address"),
        ([("a", "127.0.0.1:x")], "bad node address"),
    ],
)
def test_bad_nodes_are_refused_clearly(nodes: list[tuple[str, str]], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        render_haproxy_config(nodes, bind="127.0.0.1:1", socket_path="/tmp/s")


def test_the_balancer_spreads_checks_and_drops_a_dead_node(tmp_path: Path) -> None:
    stores = [StoreProcess(tmp_path / f"{n}.sqlite") for n in "ab"]
    for s in stores:
        s.start()
    balancer = BalancerProcess([("a", stores[0].port), ("b", stores[1].port)], tmp_path / "lb")
    try:
        balancer.start()
        wait_until(
            lambda: all(s.status == "UP" for s in balancer.servers().values()),
            20,
            "every server up",
        )
        with httpx.Client(timeout=10) as http:
            for _ in range(10):
                assert http.get(f"{balancer.url}/health").status_code == 200
        # Separate short requests: both nodes got some (leastconn ties go round-robin).
        assert all(s.total > 0 for s in balancer.servers().values())
        stores[0].kill()
        wait_until(lambda: balancer.servers()["a"].status.startswith("DOWN"), 20, "server a down")
        with httpx.Client(timeout=10) as http:
            for _ in range(10):
                assert http.get(f"{balancer.url}/health").status_code == 200
        balancer.set_state("b", "maint")
        assert balancer.servers()["b"].status == "MAINT"
        assert httpx.get(f"{balancer.url}/health", timeout=10).status_code == 503
        with pytest.raises(RuntimeError, match="haproxy"):
            balancer.set_state("nope", "ready")
        balancer.set_state("b", "ready")
        wait_until(
            lambda: httpx.get(f"{balancer.url}/health", timeout=10).status_code == 200,
            20,
            "the balancer healthy",
        )
        pid = balancer.pid
    finally:
        balancer.stop()
        for s in stores:
            s.stop()
    assert not alive(pid)


def test_a_missing_haproxy_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("marketpulse._balancer.shutil.which", lambda *a, **k: None)
    with pytest.raises(RuntimeError, match="apt-get install haproxy"):
        haproxy_binary()
