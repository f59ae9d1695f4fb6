"""Connecting to Temporal while it may still be starting.

A Temporal server accepts TCP connections a moment before its frontend answers, and a worker
is often started alongside it (``marketpulse dev``, a compose file, a restart after a crash).
Failing at once would make the start order matter; retrying for a bounded time does not.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from temporalio.client import Client

from marketpulse._process import ManagedProcess

__all__ = ["connect_temporal"]

log = structlog.get_logger("marketpulse.pipeline.connect")


async def connect_temporal(
    address: str,
    *,
    namespace: str = "default",
    timeout: float = 60.0,
    visibility: bool = False,
    server: ManagedProcess | None = None,
) -> Client:
    """A connected Temporal client, retrying every 0.3 s while the server is not ready.

    Args:
        address: Frontend ``host:port``.
        namespace: Namespace to use.
        timeout: Seconds to keep trying.
        visibility: Also wait until workflow listing answers (a dev server's visibility store
            comes up after its frontend; clients that count or list workflows need it).
        server: The server's process, when we started it: give up at once if it exits.

    Raises:
        RuntimeError: Temporal did not answer within ``timeout`` (or ``server`` exited); the
            message holds the last error.
    """
    end = time.monotonic() + timeout
    attempts = 0
    while True:
        try:
            client = await Client.connect(address, namespace=namespace)
            if visibility:
                await client.count_workflows()
            if attempts:
                log.info("connected to Temporal", address=address, attempts=attempts + 1)
            return client
        except Exception as exc:
            attempts += 1
            if server is not None and server.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {server.poll()}") from exc
            if time.monotonic() > end:
                raise RuntimeError(f"no answer within {timeout:g}s: {exc}") from exc
            if attempts == 1:
                log.warning("Temporal not ready; retrying", address=address, error=str(exc)[:200])
            await asyncio.sleep(0.3)
