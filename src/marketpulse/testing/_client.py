"""Calling a store's functions over its HTTP API, as a user or with the admin key."""

from __future__ import annotations

from typing import Any, Generic, Literal, Self, TypeVar

import httpx

__all__ = ["AdminClient", "AsyncAdminClient", "FunctionError"]

Kind = Literal["query", "mutation", "action"]
H = TypeVar("H", httpx.Client, httpx.AsyncClient)


class FunctionError(RuntimeError):
    """A store function answered with an error (the message is the store's, never the key)."""


class _Calls(Generic[H]):
    """What both clients share: their connection pool, the request they send and how they read
    its answer.

    Args:
        url: The store's base URL.
        admin_key: The store's admin key; None calls as an anonymous user.
        timeout: Seconds per request.
        format: The value encoding asked for (``convex_encoded_json`` or ``json``).
    """

    _http_class: type[H]

    def __init__(
        self,
        url: str,
        admin_key: str | None = None,
        *,
        timeout: float = 30.0,
        format: str = "convex_encoded_json",
    ) -> None:
        headers = {"Authorization": f"Convex {admin_key}"} if admin_key else {}
        self._http: H = self._http_class(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self.format = format

    def _body(self, path: str, args: dict[str, Any] | None) -> dict[str, Any]:
        return {"path": path, "args": args or {}, "format": self.format}

    @staticmethod
    def _answer(response: httpx.Response) -> dict[str, Any]:
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    @staticmethod
    def _value(path: str, answer: dict[str, Any]) -> Any:
        if answer.get("status") != "success":
            raise FunctionError(f"{path}: {answer.get('errorMessage')}")
        return answer.get("value")


class AdminClient(_Calls[httpx.Client]):
    """Calls functions of a running store over ``/api/{query,mutation,action}``.

    With an admin key it sends ``Authorization: Convex <key>``, as the worker does, so internal
    functions may be called; the key travels only in that header.

    Args:
        url: The store's base URL.
        admin_key: The store's admin key; None calls as an anonymous user.
        timeout: Seconds per request.
        format: The value encoding asked for (``convex_encoded_json`` or ``json``).
    """

    _http_class = httpx.Client

    def call(self, kind: Kind, path: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """One call; returns the store's whole answer (``status``, ``value`` or ``errorMessage``).

        Raises:
            httpx.HTTPStatusError: The store refused the request itself (e.g. a bad key).
        """
        return self._answer(self._http.post(f"/api/{kind}", json=self._body(path, args)))

    def query(self, path: str, args: dict[str, Any] | None = None) -> Any:
        """Run a query; returns its value.

        Raises:
            FunctionError: The query failed.
        """
        return self._value(path, self.call("query", path, args))

    def mutation(self, path: str, args: dict[str, Any] | None = None) -> Any:
        """Run a mutation; returns its value.

        Raises:
            FunctionError: The mutation failed.
        """
        return self._value(path, self.call("mutation", path, args))

    def close(self) -> None:
        """Close its connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAdminClient(_Calls[httpx.AsyncClient]):
    """:class:`AdminClient` for an event loop that must keep running while a call is out (e.g.
    one that also holds the subscriptions the call's writes reach); same arguments."""

    _http_class = httpx.AsyncClient

    async def call(
        self, kind: Kind, path: str, args: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One call; returns the store's whole answer (see :meth:`AdminClient.call`)."""
        return self._answer(await self._http.post(f"/api/{kind}", json=self._body(path, args)))

    async def mutation(self, path: str, args: dict[str, Any] | None = None) -> Any:
        """Run a mutation; returns its value.

        Raises:
            FunctionError: The mutation failed.
        """
        return self._value(path, await self.call("mutation", path, args))

    async def aclose(self) -> None:
        """Close its connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
