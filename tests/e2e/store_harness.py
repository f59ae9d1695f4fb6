"""Helpers for whole-system store tests: a real ``marketpulse serve`` and the npm client driver."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
JS_DIR = HERE.parent / "js"
ADMIN_KEY = "e2e-admin-key-" + "0" * 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class StoreProcess:
    """``python -m marketpulse serve`` on a free port, serving tests/e2e/example_functions."""

    def __init__(
        self, db_path: Path, *, port: int | None = None, extra: list[str] | None = None
    ) -> None:
        self.db_path = db_path
        self.port = port or free_port()
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = db_path.with_suffix(f".{self.port}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> StoreProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
        env["MARKETPULSE_ADMIN_KEY"] = ADMIN_KEY
        cmd = [
            sys.executable, "-m", "marketpulse", "serve",
            "--port", str(self.port),
            "--db", f"sqlite:{self.db_path}",
            "--functions", "example_functions",
            *self.extra,
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"store exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"store did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode if self.proc else None

    def call(self, kind: str, path: str, args: dict[str, Any], admin: bool = False) -> Any:
        headers = {"Authorization": f"Convex {ADMIN_KEY}"} if admin else {}
        r = httpx.post(
            f"{self.url}/api/{kind}",
            json={"path": path, "args": args, "format": "convex_encoded_json"},
            headers=headers,
            timeout=10,
        )
        r.raise_for_status()
        return r.json()


def node_available() -> bool:
    return shutil.which("node") is not None and (JS_DIR / "node_modules" / "convex").is_dir()


class JsDriver:
    """tests/js/driver.mjs in a subprocess: official ConvexClient + ConvexHttpClient."""

    def __init__(self, url: str, *, admin: bool = False) -> None:
        env = dict(os.environ)
        if admin:
            env["DRIVER_ADMIN_KEY"] = ADMIN_KEY
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
