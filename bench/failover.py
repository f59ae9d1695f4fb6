"""Failover through the real balancer: from a store node's SIGKILL to its clients' next fresh
value (issue 14; goal p50 ≤ 3 s), beside the same client's normal push latency.

Three nodes on one PostgreSQL database behind HAProxy (deploy/haproxy's template); the official
npm client (tests/js/driver.mjs) subscribes to ``bench:latest`` through the balancer, pinned to the
node about to die (the others in maintenance while it connects), while a writer stamps
``bench:stamp`` 20 times a second on a surviving node. Each round SIGKILLs the victim, times the
client's first value stamped after the kill, restarts the victim and waits until HAProxy has it
back. The baseline is the same client's send → receipt in the 2 s before each kill.

Needs a PostgreSQL server (``--pg``) and ``haproxy``; a database is created and dropped.

    python bench/failover.py [--kills 5] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import emit, print_table
from cluster import HEADERS, _row, database, node
from e2e.js_driver import JsDriver  # the official npm client, as the e2e tests drive it
from marketpulse.testing import AdminClient, BalancerProcess, StoreProcess, summarize_ms

GOAL_FAILOVER_P50_S = 3.0
STAMP_INTERVAL_S = 0.05
NODES = ("a", "b", "c")


class Stamper:
    """Stamps ``bench:stamp`` every ``STAMP_INTERVAL_S`` on one node (HTTP), in a thread;
    remembers when each sequence number was sent."""

    def __init__(self, node: StoreProcess) -> None:
        self.node = node
        self.sent: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with AdminClient(self.node.url, self.node.admin_key, timeout=10) as admin:
            seq = 0
            while not self.stop.is_set():
                seq += 1
                self.sent[seq] = time.perf_counter()
                admin.mutation("bench:stamp", {"seq": seq})
                time.sleep(STAMP_INTERVAL_S)

    def __enter__(self) -> Stamper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def _updates(js: JsDriver, until: float) -> list[tuple[float, int]]:
    """(receipt time, seq) of the subscription's updates until ``until`` (perf_counter)."""
    out = []
    while (left := until - time.perf_counter()) > 0:
        try:
            event = js.events.get(timeout=left)
        except Exception:  # queue.Empty: nothing more before ``until``
            break
        if event.get("event") == "update" and event.get("value"):
            out.append((time.perf_counter(), int(event["value"]["seq"])))
    return out


def failover(server: str, kills: int, folder: Path) -> dict[str, list[float]]:
    """SIGKILL the node an npm subscriber is on, ``kills`` times; return the kill → next fresh
    value times and the normal push latencies (send → receipt) before each kill (ms)."""
    out: dict[str, list[float]] = {"failover": [], "push": []}
    with database(server) as url:
        nodes = {n: node(f"{url}?node={n}", folder / f"fo-{n}.log", None) for n in NODES}
        for n in nodes.values():
            n.start()
        balancer = BalancerProcess([(n, p.port) for n, p in nodes.items()], folder / "lb")
        try:
            balancer.start()
            for k in range(kills):
                victim, writer = NODES[k % 3], NODES[(k + 1) % 3]
                for n in NODES:
                    balancer.set_state(n, "ready" if n == victim else "maint")
                js = JsDriver(balancer.url)
                try:
                    js.send(cmd="subscribe", id="s", path="bench:latest", args={})
                    for n in NODES:
                        balancer.set_state(n, "ready")
                    with Stamper(nodes[writer]) as stamper:
                        # Normal pushes first: the baseline, from the same client.
                        for at, seq in _updates(js, time.perf_counter() + 2.0):
                            if seq in stamper.sent:
                                out["push"].append((at - stamper.sent[seq]) * 1000)
                        last = max(stamper.sent)
                        killed = time.perf_counter()
                        nodes[victim].kill()
                        deadline = killed + 60
                        while time.perf_counter() < deadline:
                            fresh = [at for at, seq in _updates(js, deadline) if seq > last]
                            if fresh:
                                out["failover"].append((fresh[0] - killed) * 1000)
                                break
                        else:
                            raise RuntimeError(f"no fresh value 60 s after killing node {victim}")
                finally:
                    js.close()
                nodes[victim].start()  # same port; HAProxy takes it back after `rise` checks
                deadline = time.monotonic() + 30
                while balancer.servers()[victim].status != "UP":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"node {victim} not back in the balancer")
                    time.sleep(0.1)
        finally:
            balancer.stop()
            for n in nodes.values():
                n.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--kills", type=int, default=5, help="nodes SIGKILLed, one per round")
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    kills = 3 if opts.quick else opts.kills
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        fo = failover(opts.pg, kills, Path(tmp))
    f = {"failover": summarize_ms(fo["failover"]), "baseline_push": summarize_ms(fo["push"])}
    print_table(
        f"failover through HAProxy, npm client, {kills} SIGKILLs",
        HEADERS,
        [
            _row("SIGKILL → next fresh value", f["failover"], f"p50 ≤ {GOAL_FAILOVER_P50_S:g} s"),
            _row("send → receipt before the kill (baseline)", f["baseline_push"]),
        ],
    )
    met = f["failover"]["p50_ms"] <= GOAL_FAILOVER_P50_S * 1000
    print(f"failover p50 {f['failover']['p50_ms'] / 1000:.2f} s: goal {'met' if met else 'missed'}")
    emit({"bench": "failover", "kills": kills, **f, "goal_p50_s": GOAL_FAILOVER_P50_S})


if __name__ == "__main__":
    main()
