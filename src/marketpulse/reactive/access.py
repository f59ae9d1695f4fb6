"""Who is calling: the admin key check shared by the WebSocket and HTTP front doors.

Policy: the admin key (``Authorization: Convex <key>`` over HTTP, ``Authenticate`` with
``tokenType: "Admin"`` over the WebSocket) makes the caller admin, optionally acting as a user
identity; ``None`` logs out; user JWTs are refused with a clear message (no identity provider is
configured). The key is compared in constant time and never echoed back or logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from typing import Any, Literal

import orjson

__all__ = ["AccessDenied", "AdminKeyAuth", "Caller"]


class AccessDenied(Exception):
    """Credentials were presented and refused; the message is safe to show the client."""


@dataclass(frozen=True)
class Caller:
    """The result of an authentication decision, before it becomes an engine identity."""

    kind: Literal["anonymous", "admin"]
    acting_as: dict[str, Any] | None = None


ANONYMOUS = Caller("anonymous")


class AdminKeyAuth:
    """Checks credentials against the deployment's admin key."""

    def __init__(self, admin_key: str | None) -> None:
        self._key = admin_key.encode() if admin_key else None

    def __repr__(self) -> str:  # never show the key
        return "AdminKeyAuth(<redacted>)"

    def _is_admin_key(self, value: str) -> bool:
        return self._key is not None and hmac.compare_digest(value.encode(), self._key)

    def websocket(
        self, token_type: str, value: str | None, acting_as: dict[str, Any] | None
    ) -> Caller:
        """Decide an ``Authenticate`` message.

        Raises:
            AccessDenied: the token is refused (send AuthError and close).
        """
        if token_type == "None":
            return ANONYMOUS
        if token_type == "Admin":
            if value is not None and self._is_admin_key(value):
                return Caller("admin", acting_as)
            raise AccessDenied("Invalid admin key")
        raise AccessDenied(
            "User tokens are not accepted by this server (no identity provider is configured)"
        )

    def http(self, authorization: str | None) -> Caller:
        """Decide an HTTP ``Authorization`` header.

        Raises:
            AccessDenied: the header is present but refused (answer 401).
        """
        if not authorization:
            return ANONYMOUS
        scheme, _, credentials = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "convex":
            key, sep, encoded_identity = credentials.strip().partition(":")
            if not self._is_admin_key(key):
                raise AccessDenied("Invalid admin key")
            acting_as = None
            if sep:
                try:
                    decoded = orjson.loads(base64.b64decode(encoded_identity, validate=True))
                except (binascii.Error, ValueError, orjson.JSONDecodeError):
                    raise AccessDenied("Malformed acting-as identity in Authorization") from None
                if not isinstance(decoded, dict):
                    raise AccessDenied("Malformed acting-as identity in Authorization")
                acting_as = decoded
            return Caller("admin", acting_as)
        if scheme == "bearer":
            raise AccessDenied(
                "User tokens are not accepted by this server (no identity provider is configured)"
            )
        raise AccessDenied("Unsupported Authorization scheme")
