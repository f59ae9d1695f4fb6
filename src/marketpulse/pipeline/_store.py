"""The worker's only way into the store: Convex wire API calls with the admin key.

The worker never imports the engine: it speaks the same wire API any Convex client speaks
(docs/interfaces.md §4). Mutations, the hot path (one per coalesced batch, a few in flight, each
answer matched by ``requestId``), go over one sync WebSocket (``Mutation`` →
``MutationResponse``), as the official clients send them: on this machine that round trip is about half of an HTTP one at p50 and
at p99 (0.55 vs 0.97 ms and 0.82 vs 1.73 ms, bench/store_write_path.py). Queries, and mutations when ``transport="http"``, go over
Convex HTTP on one keep-alive connection. The admin key lives only in the ``Authorization``
header and the socket's ``Authenticate`` frame; it is never logged and never put in an
exception.

The official PyPI client is not used here: its calls block a thread per request, which an
asyncio activity would pay on every batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal

import httpx
import orjson
from websockets.exceptions import WebSocketException

from marketpulse.reactive.sync.client import LightSyncClient, ServerError
from marketpulse.reactive.values import value_to_json

__all__ = ["SentMutation", "StoreClient", "StoreError"]


class StoreError(Exception):
    """The store refused a call or could not be reached.

    Attributes:
        path: Function path called.
        transient: True when retrying the same call may succeed (network, 5xx).
    """

    def __init__(self, path: str, message: str, *, transient: bool) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.transient = transient


class SentMutation:
    """A mutation sent to the store, its answer still to come (:meth:`result`).

    Attributes:
        path: Function path called.
        connection: Which of the client's sockets carried it (``StoreClient.connections``
            when it was sent; 0 over HTTP).
    """

    __slots__ = (
        "_client",
        "_deadline",
        "_error",
        "_future",
        "_sync",
        "_value",
        "connection",
        "path",
    )

    def __init__(
        self,
        path: str,
        connection: int,
        *,
        client: StoreClient | None = None,
        sync: LightSyncClient | None = None,
        future: asyncio.Future[dict[str, Any]] | None = None,
        deadline: float = 0.0,
        value: Any = None,
        error: StoreError | None = None,
    ) -> None:
        self.path = path
        self.connection = connection
        self._client = client
        self._sync = sync
        self._future = future
        self._deadline = deadline
        self._value = value
        self._error = error

    async def result(self) -> Any:
        """Wait for the answer (within the client's timeout from the send); its value.

        Raises:
            StoreError: The call failed; ``transient`` says whether retrying makes sense.
        """
        if self._future is None:
            if self._error is not None:
                raise self._error
            return self._value
        assert self._client is not None and self._sync is not None
        try:
            async with asyncio.timeout_at(self._deadline):
                response = await self._future
        except (ServerError, WebSocketException, OSError, TimeoutError) as exc:
            raise await self._client._lost(self._sync, self.path, exc) from None
        if response.get("success"):
            return response.get("result")
        raise StoreError(self.path, str(response.get("result"))[:500], transient=False)


class StoreClient:
    """Calls store functions as admin: mutations over the sync WebSocket (or HTTP), queries over HTTP.

    Args:
        base_url: Store URL, e.g. ``http://127.0.0.1:3210``.
        admin_key: The store's admin key (``MARKETPULSE_ADMIN_KEY``).
        timeout: Seconds per request.
        transport: ``"websocket"`` (default) or ``"http"`` for mutations.
    """

    def __init__(
        self,
        base_url: str,
        admin_key: str,
        *,
        timeout: float = 10.0,
        transport: Literal["websocket", "http"] = "websocket",
    ) -> None:
        if not admin_key:
            raise ValueError("an admin key is needed to write market data (MARKETPULSE_ADMIN_KEY)")
        self.base_url = base_url.rstrip("/")
        self.transport = transport
        self._admin_key = admin_key
        self._timeout = timeout
        self._sync: LightSyncClient | None = None
        self._connecting = asyncio.Lock()
        self.connections = 0
        """Sync sockets opened so far: a new one may reach a restarted or another store node."""
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={
                "Authorization": f"Convex {admin_key}",
                "Content-Type": "application/json",
            },
            timeout=timeout,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
        )

    def __repr__(self) -> str:
        return f"StoreClient({self.base_url!r})"

    async def mutation(self, path: str, args: dict[str, Any]) -> Any:
        """Run a mutation; returns its value (Convex JSON decoded as plain JSON).

        Raises:
            StoreError: The call failed; ``transient`` says whether retrying makes sense.
        """
        sent = await self.send_mutation(path, args)
        return await sent.result()

    async def send_mutation(
        self, path: str, args: dict[str, Any], *, connection: int | None = None
    ) -> SentMutation:
        """Send a mutation without waiting for its answer; :meth:`SentMutation.result` waits.

        Over the WebSocket several mutations may be in flight: the store runs one socket's
        mutations in the order sent and answers them in that order (docs/sync.md, "Mutations
        are pipelined"). Over HTTP the call completes here (one connection does not keep
        concurrent requests in order).

        Args:
            path: Function path.
            args: Its argument object.
            connection: Send only on this socket (a :attr:`SentMutation.connection`): if it
                is gone, fail (transiently) rather than open a new one. A caller pipelining
                mutations needs that: a later one must not reach the store on a new socket
                while an earlier one failed on the old, or it could be applied first.

        Raises:
            StoreError: Nothing was sent (or, over HTTP, the call failed).
        """
        if self.transport == "http":
            try:
                value = await self._call("/api/mutation", path, args)
            except StoreError as exc:
                return SentMutation(path, 0, error=exc)
            return SentMutation(path, 0, value=value)
        sync, number = await self._socket(path, connection)
        deadline = asyncio.get_running_loop().time() + self._timeout
        try:
            async with asyncio.timeout_at(deadline):
                future = await sync.send_request("Mutation", path, args)
        except (ServerError, WebSocketException, OSError, TimeoutError) as exc:
            raise await self._lost(sync, path, exc) from None
        return SentMutation(path, number, client=self, sync=sync, future=future, deadline=deadline)

    async def _lost(self, sync: LightSyncClient, path: str, exc: BaseException) -> StoreError:
        """A call on ``sync`` failed: drop that socket (only that one: another call may have
        opened its successor already), and say why."""
        # Whatever state the socket is in, the next call starts on a fresh one. A batch
        # re-sent after a lost response is harmless: applyUpdates is idempotent (state
        # writes, trades keyed by trade id).
        if self._sync is sync:
            await self._drop_socket()
        else:
            with contextlib.suppress(WebSocketException, OSError):
                await sync.close()
        if isinstance(exc, ServerError) and "AuthError" in str(exc):
            return StoreError(path, "the store refused the admin key", transient=False)
        return StoreError(path, f"store connection lost ({type(exc).__name__})", transient=True)

    async def _socket(self, path: str, connection: int | None) -> tuple[LightSyncClient, int]:
        async with self._connecting:
            if self._sync is not None and self._sync.failure is None:
                if connection is not None and connection != self.connections:
                    raise StoreError(path, "store connection replaced", transient=True)
                return self._sync, self.connections
            if connection is not None:
                raise StoreError(path, "store connection lost", transient=True)
            await self._drop_socket()
            url = LightSyncClient.ws_url(self.base_url)
            sync = LightSyncClient(url, keep_transitions=False)
            try:
                async with asyncio.timeout(self._timeout):
                    await sync.connect()
                await sync.authenticate("Admin", self._admin_key)
            except (WebSocketException, OSError, TimeoutError) as exc:
                await sync.close()
                raise StoreError(
                    path, f"store unreachable ({type(exc).__name__})", transient=True
                ) from None
            self._sync = sync
            self.connections += 1
            return sync, self.connections

    async def _drop_socket(self) -> None:
        sync, self._sync = self._sync, None
        if sync is not None:
            with contextlib.suppress(WebSocketException, OSError):
                await sync.close()

    async def query(self, path: str, args: dict[str, Any]) -> Any:
        """Run a query; returns its value."""
        return await self._call("/api/query", path, args)

    async def _call(self, endpoint: str, path: str, args: dict[str, Any]) -> Any:
        body = orjson.dumps(
            {"path": path, "args": value_to_json(args), "format": "convex_encoded_json"}
        )
        try:
            resp = await self._http.post(endpoint, content=body)
        except httpx.HTTPError as exc:
            raise StoreError(
                path, f"store unreachable ({type(exc).__name__})", transient=True
            ) from None
        if resp.status_code >= 500:
            raise StoreError(path, f"HTTP {resp.status_code}", transient=True)
        try:
            data = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise StoreError(path, f"HTTP {resp.status_code}, not JSON", transient=False) from None
        if not isinstance(data, dict):
            raise StoreError(path, f"HTTP {resp.status_code}, unexpected body", transient=False)
        if data.get("status") == "success":
            return data.get("value")
        message = str(data.get("errorMessage") or data.get("message") or data)[:500]
        raise StoreError(path, message, transient=False)

    async def aclose(self) -> None:
        """Close the socket and the connection pool."""
        await self._drop_socket()
        await self._http.aclose()
