"""Calling a store's functions over its HTTP API, as a user or with the admin key."""

from __future__ import annotations

from typing import Any, Literal, Self

import httpx

__all__ = ["AdminClient", "FunctionError"]

Kind = Literal["query", "mutation", "action"]


class FunctionError(RuntimeError):
    """A store function answered with an error (the message is the store's, never the key)."""


class AdminClient:
    """Calls functions of a running store over ``/api/{query,mutation,action}``.

    With an admin key it sends ``Authorization: Convex <key>``, as the worker does, so internal
    functions may be called; the key travels only in that header.

    Args:
        url: The store's base URL.
        admin_key: The store's admin key; None calls as an anonymous user.
        timeout: Seconds per request.
        format: The value encoding asked for (``convex_encoded_json`` or ``json``).
    """

    def __init__(
        self,
        url: str,
        admin_key: str | None = None,
        *,
        timeout: float = 30.0,
        format: str = "convex_encoded_json",
    ) -> None:
        headers = {"Authorization": f"Convex {admin_key}"} if admin_key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self.format = format

    def call(self, kind: Kind, path: str, args: dict[str, Any]) -> dict[str, Any]:
        """One call; returns the store's whole answer (``status``, ``value`` or ``errorMessage``).

        Raises:
            httpx.HTTPStatusError: The store refused the request itself (e.g. a bad key).
        """
        body = {"path": path, "args": args, "format": self.format}
        response = self._http.post(f"/api/{kind}", json=body)
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    def _value(self, kind: Kind, path: str, args: dict[str, Any]) -> Any:
        answer = self.call(kind, path, args)
        if answer.get("status") != "success":
            raise FunctionError(f"{path}: {answer.get('errorMessage')}")
        return answer.get("value")

    def query(self, path: str, args: dict[str, Any] | None = None) -> Any:
        """Run a query; returns its value.

        Raises:
            FunctionError: The query failed.
        """
        return self._value("query", path, args or {})

    def mutation(self, path: str, args: dict[str, Any] | None = None) -> Any:
        """Run a mutation; returns its value.

        Raises:
            FunctionError: The mutation failed.
        """
        return self._value("mutation", path, args or {})

    def action(self, path: str, args: dict[str, Any] | None = None) -> Any:
        """Run an action; returns its value.

        Raises:
            FunctionError: The action failed.
        """
        return self._value("action", path, args or {})

    def close(self) -> None:
        """Close its connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
