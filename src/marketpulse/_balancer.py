"""HAProxy in front of store nodes: its configuration, rendered for N nodes, and the process.

The configuration is one template (``_haproxy.cfg.tmpl`` beside this module);
``deploy/haproxy/haproxy.cfg`` is its rendering for three nodes, and the tests and
``marketpulse dev --store-nodes N`` render it for the nodes they start. HAProxy is Debian's
package (``apt-get install haproxy``), found on ``PATH`` or at ``/usr/sbin/haproxy``.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from marketpulse._components import HOST, HttpChildProcess
from marketpulse._process import free_port, http_ok

__all__ = [
    "BACKEND",
    "BalancerProcess",
    "HealthCheck",
    "ServerState",
    "haproxy_binary",
    "render_haproxy_config",
]

TEMPLATE = Path(__file__).with_name("_haproxy.cfg.tmpl")
BACKEND = "store_nodes"
"""The backend's name in the configuration (``set server store_nodes/<node> ...``)."""
INSTALL_HINT = "install it with: sudo apt-get install haproxy (or scripts/install.sh)"


@dataclass(frozen=True)
class HealthCheck:
    """How HAProxy checks the nodes' ``/health``.

    Attributes:
        inter_ms: Between checks of a node that is up (and of one that is down).
        fastinter_ms: Between checks while a node is going up or down.
        fall: Failed checks in a row that mark a node down.
        rise: Passed checks in a row that mark it up again.
    """

    inter_ms: int = 1000
    fastinter_ms: int = 250
    fall: int = 2
    rise: int = 2


def render_haproxy_config(
    nodes: Sequence[tuple[str, str]],
    *,
    bind: str,
    socket_path: str,
    check: HealthCheck = HealthCheck(),
    maxconn: int = 100_000,
) -> str:
    """The HAProxy configuration for these store nodes.

    Args:
        nodes: ``(name, "host:port")`` of each node (names are HAProxy's server names).
        bind: Where HAProxy listens, e.g. ``"127.0.0.1:3210"`` or ``":443 ssl crt ..."``.
        socket_path: Its admin socket.
        check: The health check's timing.
        maxconn: Its connection limit.

    Raises:
        ValueError: No node, or a name or address HAProxy would misread.
    """
    if not nodes:
        raise ValueError("at least one store node is needed")
    lines = []
    for name, address in nodes:
        if not name or any(c.isspace() or c in "/{}" for c in name):
            raise ValueError(f"bad node name {name!r}: no spaces, slashes or braces")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or any(c.isspace() for c in address):
            raise ValueError(f"bad node address {address!r}: want host:port")
        lines.append(f"    server {name} {address} check")
    return TEMPLATE.read_text().format(
        bind=bind,
        socket=socket_path,
        maxconn=maxconn,
        inter_ms=check.inter_ms,
        fastinter_ms=check.fastinter_ms,
        fall=check.fall,
        rise=check.rise,
        servers="\n".join(lines),
    )


def haproxy_binary() -> str:
    """The ``haproxy`` executable.

    Raises:
        RuntimeError: It is not installed (the message says how to install it).
    """
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError(f"haproxy is not installed; {INSTALL_HINT}")
    return found


@dataclass(frozen=True)
class ServerState:
    """One node as HAProxy sees it (from ``show stat``).

    Attributes:
        status: ``UP``, ``DOWN``, ``MAINT``, or a transition such as ``UP 1/2``.
        sessions: Its open sessions (WebSockets included).
        total: Sessions it has had.
    """

    status: str
    sessions: int
    total: int


class BalancerProcess(HttpChildProcess):
    """HAProxy on 127.0.0.1 in front of store nodes, from the same template as production.

    Ready once ``/health`` answers through it (so at least one node is up). Stopped with its
    process group like every child; its admin socket lets a test see and change the nodes'
    states.

    Args:
        nodes: ``(name, port)`` of each node on 127.0.0.1.
        folder: Where its configuration, admin socket and log go.
        port: Its port (default: a free one).
        check: The health check's timing.
    """

    name = "balancer"
    start_timeout = 30.0
    stop_timeout = 10.0

    def __init__(
        self,
        nodes: Sequence[tuple[str, int]],
        folder: Path,
        *,
        port: int | None = None,
        check: HealthCheck = HealthCheck(),
    ) -> None:
        super().__init__(folder / "haproxy.log")
        self.nodes = list(nodes)
        self.folder = folder
        self.port = port or free_port()
        self.check = check
        self.config_path = folder / "haproxy.cfg"
        # A Unix socket's path is limited to 107 bytes: a deep test folder may be too long.
        self.socket_path = folder / "admin.sock"
        if len(os.fsencode(self.socket_path)) > 100:
            self.socket_path = Path(tempfile.gettempdir()) / f"marketpulse-haproxy-{self.port}.sock"
        self.waits_for = f"answering {self.url}/health"

    def argv(self) -> list[str]:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        config = render_haproxy_config(
            [(name, f"{HOST}:{port}") for name, port in self.nodes],
            bind=f"{HOST}:{self.port}",
            socket_path=str(self.socket_path),
            check=self.check,
            maxconn=4096,  # needs ~2 descriptors each, under a default 20,000 limit
        )
        self.config_path.write_text(config)
        # -db: stay in the foreground (the launcher supervises it); -W: master-worker.
        return [haproxy_binary(), "-W", "-db", "-f", str(self.config_path)]

    def ready(self) -> bool:
        return http_ok(f"{self.url}/health")

    def stop(self, timeout: float | None = None) -> int | None:
        code = super().stop(timeout)
        self.socket_path.unlink(missing_ok=True)
        return code

    def command(self, line: str) -> str:
        """Run one admin-socket command (e.g. ``show stat``) and return its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(os.fspath(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, ServerState]:
        """Each node's state, by name."""
        text = self.command("show stat").lstrip("# ")
        out = {}
        for row in csv.DictReader(text.splitlines()):
            if row.get("pxname") == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND"):
                out[row["svname"]] = ServerState(
                    row["status"], int(row["scur"] or 0), int(row["stot"] or 0)
                )
        return out

    def set_state(self, node: str, state: str) -> None:
        """Put a node in ``ready``, ``drain`` or ``maint`` (as an operator draining it would).

        Raises:
            RuntimeError: HAProxy refused the command.
        """
        answer = self.command(f"set server {BACKEND}/{node} state {state}").strip()
        if answer:
            raise RuntimeError(f"haproxy: {answer}")
