"""Render deploy/haproxy/haproxy.cfg for your store nodes.

    python deploy/haproxy/render.py --bind :3210 --node a=10.0.0.11:3210 \
        --node b=10.0.0.12:3210 --node c=10.0.0.13:3210 > /etc/haproxy/haproxy.cfg

Without ``--node`` it prints the checked-in example (three nodes on 10.0.0.11-13), which
``tests/test_balancer.py`` keeps equal to ``haproxy.cfg`` here.
"""

from __future__ import annotations

import argparse

from marketpulse._balancer import HealthCheck, render_haproxy_config

EXAMPLE_NODES = [("a", "10.0.0.11:3210"), ("b", "10.0.0.12:3210"), ("c", "10.0.0.13:3210")]
EXAMPLE_BIND = ":3210"
EXAMPLE_SOCKET = "/run/haproxy/admin.sock"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", action="append", default=[], help="name=host:port")
    parser.add_argument("--bind", default=EXAMPLE_BIND)
    parser.add_argument("--socket", default=EXAMPLE_SOCKET)
    parser.add_argument("--inter-ms", type=int, default=HealthCheck.inter_ms)
    parser.add_argument("--fall", type=int, default=HealthCheck.fall)
    parser.add_argument("--rise", type=int, default=HealthCheck.rise)
    opts = parser.parse_args()
    nodes = [tuple(n.split("=", 1)) for n in opts.node] or EXAMPLE_NODES
    if any(len(n) != 2 for n in nodes):
        parser.error("--node wants name=host:port")
    check = HealthCheck(inter_ms=opts.inter_ms, fall=opts.fall, rise=opts.rise)
    print(
        render_haproxy_config(
            [(n[0], n[1]) for n in nodes], bind=opts.bind, socket_path=opts.socket, check=check
        ),
        end="",
    )


if __name__ == "__main__":
    main()
