"""The worker's only way into the store: Convex HTTP ``/api/mutation`` with the admin key.

The worker never imports the engine: it speaks the same wire API any Convex client speaks
(docs/interfaces.md §4), over one keep-alive HTTP connection. The admin key lives only in the
``Authorization`` header of this client; it is never logged and never put in an exception.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from marketpulse.reactive.values import value_to_json

__all__ = ["StoreClient", "StoreError"]


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


class StoreClient:
    """Calls store functions over HTTP, as admin.

    Args:
        base_url: Store URL, e.g. ``http://127.0.0.1:3210``.
        admin_key: The store's admin key (``MARKETPULSE_ADMIN_KEY``).
        timeout: Seconds per request.
    """

    def __init__(self, base_url: str, admin_key: str, *, timeout: float = 10.0) -> None:
        if not admin_key:
            raise ValueError("an admin key is needed to write market data (MARKETPULSE_ADMIN_KEY)")
        self.base_url = base_url.rstrip("/")
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
        return await self._call("/api/mutation", path, args)

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
        """Close the connection pool."""
        await self._http.aclose()
