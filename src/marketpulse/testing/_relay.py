"""A switchable TCP relay on 127.0.0.1: what a test puts between clients and store nodes to move
a client from one node to another (not a load balancer: one backend at a time, no checks)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Self

__all__ = ["TcpRelay"]


class TcpRelay:
    """Relays each new connection on :attr:`port` to the current backend port.

    :meth:`hold_replies` stops passing the backend's bytes to clients (they stay unread), so a
    test can have a request reach a node whose answer never arrives; :meth:`switch` sends new
    connections elsewhere. Runs its own event loop in a daemon thread; a context manager.

    Args:
        backend: the port connections go to first.
    """

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._replies = threading.Event()
        self._replies.set()
        self._started = threading.Event()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._started.set()
        self._loop.run_forever()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.backend)
        except OSError:
            writer.close()
            return
        ends = {writer, up_w}
        self._open |= ends

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, gated: bool) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    while gated and not self._replies.is_set():
                        await asyncio.sleep(0.01)
                    if dst.is_closing():  # cut: held replies are dropped
                        break
                    dst.write(data)
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_w, False), pipe(up_r, writer, True))
        finally:
            self._open -= ends

    def start(self) -> Self:
        """Listen (returns once :attr:`port` is bound)."""
        self._thread.start()
        self._started.wait(10)
        return self

    def switch(self, backend: int) -> None:
        """Send new connections to ``backend`` (open ones stay where they are)."""
        self.backend = backend

    def hold_replies(self) -> None:
        """Stop passing the backends' bytes to clients."""
        self._replies.clear()

    def release_replies(self) -> None:
        """Pass them again."""
        self._replies.set()

    def cut(self) -> None:
        """Reset every relayed connection now, dropping the replies held back (a node's
        answers lost with it)."""

        async def reset() -> None:
            for w in list(self._open):
                w.transport.abort()

        asyncio.run_coroutine_threadsafe(reset(), self._loop).result(5)

    def stop(self) -> None:
        """Close the listener and stop the loop."""

        async def close() -> None:
            if self._server is not None:
                self._server.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
