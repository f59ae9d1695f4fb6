"""A webhook receiver a test runs itself: it records every JSON POST, on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from marketpulse.testing._loopback import LoopbackHttpServer

__all__ = ["WebhookReceiver"]


class WebhookReceiver(LoopbackHttpServer):
    """Records JSON POSTs on a free port of 127.0.0.1, in a thread; a context manager.

    Args:
        fail_first: answer this many POSTs with 500 before accepting (to exercise retries).
        redirect_to: answer every POST with a 307 to this URL instead (recorded as 307).
    """

    def __init__(self, *, fail_first: int = 0, redirect_to: str | None = None) -> None:
        self.fail_first = fail_first
        self.redirect_to = redirect_to
        self.attempts: list[tuple[float, int, Any]] = []
        """Every POST: (monotonic time, the status answered, the JSON body)."""
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        super().__init__()

    @property
    def url(self) -> str:
        """Where to POST."""
        return self.base_url + "/hook"

    @property
    def received(self) -> list[Any]:
        """The bodies of the POSTs it accepted, in order."""
        with self._lock:
            return [body for _, status, body in self.attempts if status == 200]

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Any]:
        """Wait until ``count`` POSTs were accepted; return their bodies.

        Raises:
            AssertionError: not within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(1 for a in self.attempts if a[1] == 200) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{count} webhook posts expected; got {self.attempts}")
                self._cond.wait(left)
        return self.received

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("content-length") or 0), 1 << 20)
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except ValueError:
                    body = None
                with receiver._cond:
                    failed = sum(1 for a in receiver.attempts if a[1] != 200)
                    status = 500 if failed < receiver.fail_first else 200
                    if receiver.redirect_to is not None:
                        status = 307
                    receiver.attempts.append((time.monotonic(), status, body))
                    receiver._cond.notify_all()
                self.send_response(status)
                if receiver.redirect_to is not None:
                    self.send_header("location", receiver.redirect_to)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        return Handler
