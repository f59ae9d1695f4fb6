"""The npm ``convex`` client driven from a test: tests/js/driver.mjs in a node subprocess."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

JS_DIR = Path(__file__).resolve().parent.parent / "js"


def node_available() -> bool:
    """Whether node and tests/js/node_modules (``npm ci`` in tests/js) are there."""
    return shutil.which("node") is not None and (JS_DIR / "node_modules" / "convex").is_dir()


class JsDriver:
    """tests/js/driver.mjs in a subprocess: official ConvexClient + ConvexHttpClient."""

    def __init__(self, url: str, *, admin_key: str | None = None) -> None:
        env = dict(os.environ)
        if admin_key:
            env["DRIVER_ADMIN_KEY"] = admin_key
        self.proc = subprocess.Popen(
            ["node", str(JS_DIR / "driver.mjs"), url],
            cwd=JS_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr: list[str] = []
        self.backlog: list[dict[str, Any]] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()
        self.wait_for(lambda e: e["event"] == "ready")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            # The Convex client logs to the console too: keep what is not an event.
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                self.stderr.append(line)
                continue
            if isinstance(event, dict):
                self.events.put(event)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 20.0
    ) -> dict[str, Any]:
        """The first unconsumed event matching ``pred`` (others stay for later waits)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.backlog):
                if pred(event):
                    del self.backlog[i]
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no matching event in {timeout}s; unconsumed {self.backlog}; "
                    f"stderr={''.join(self.stderr)}"
                )
            try:
                self.backlog.append(self.events.get(timeout=left))
            except queue.Empty:
                continue

    def call(self, cmd: str, via: str, path: str, args: dict[str, Any], rid: str) -> dict[str, Any]:
        self.send(cmd=cmd, via=via, path=path, args=args, rid=rid)
        return self.wait_for(lambda e: e.get("rid") == rid)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(cmd="close")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
