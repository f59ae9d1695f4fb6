"""Who is calling: the admin key and user tokens, shared by the WebSocket and HTTP front doors.

Policy: the admin key (``Authorization: Convex <key>`` over HTTP, ``Authenticate`` with
``tokenType: "Admin"`` over the WebSocket) makes the caller admin, optionally acting as a user
identity; a user JWT (``Authorization: Bearer <jwt>``, ``tokenType: "User"``) is checked
against the configured providers (:mod:`marketpulse.reactive.auth`) and makes the caller that
user; ``None`` logs out. Without providers user tokens are refused with a clear message. The
key is compared in constant time and never echoed back or logged; neither is a token.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson
import structlog

from marketpulse.reactive.admission import THROTTLE

if TYPE_CHECKING:
    from marketpulse.reactive.auth import TokenVerifier, VerifiedToken

__all__ = ["Access", "AccessDenied", "Caller"]

log = structlog.get_logger("marketpulse.access")


class AccessDenied(Exception):
    """Credentials were presented and refused; the message is safe to show the client."""


@dataclass(frozen=True)
class Caller:
    """The result of an authentication decision, before it becomes an engine identity.

    Attributes:
        kind: anonymous, admin, or a user with a verified token.
        acting_as: the identity an admin acts as (admin), or the user's ``UserIdentity`` (user).
        expires_at: when the user's token expires (Unix seconds).
    """

    kind: Literal["anonymous", "admin", "user"]
    acting_as: dict[str, Any] | None = None
    expires_at: float | None = None


ANONYMOUS = Caller("anonymous")
_NO_PROVIDER = "User tokens are not accepted by this server (no identity provider is configured)"


class Access:
    """Checks credentials against the deployment's admin key and identity providers.

    Args:
        admin_key: the admin key; None means no caller is admin.
        verifier: checks user tokens; None refuses them.
    """

    def __init__(self, admin_key: str | None, verifier: TokenVerifier | None = None) -> None:
        self._key = admin_key.encode() if admin_key else None
        self.verifier = verifier
        self.on_refused: Callable[[], None] | None = None
        """Called for every refused admin key or user token (the gateway counts them)."""

    def __repr__(self) -> str:  # never show the key
        return f"Access(<redacted>, {self.verifier!r})"

    def _denied(self, message: str) -> AccessDenied:
        if self.on_refused is not None:
            self.on_refused()
        return AccessDenied(message)

    def _refused(self, exc: Exception) -> AccessDenied:
        # The reason only, never the token; rate-limited: anyone can send bad tokens.
        THROTTLE.log(log, "info", "user token refused", reason=str(exc)[:200])
        return self._denied(str(exc))

    def _is_admin_key(self, value: str) -> bool:
        return self._key is not None and hmac.compare_digest(value.encode(), self._key)

    def user(self, token: str, *, fetch: bool = True) -> Caller:
        """Decide a user token against the cached provider keys.

        Args:
            token: the JWT.
            fetch: False after awaiting a KeysPending's fetch: decide with the keys there are.

        Raises:
            AccessDenied: the token is refused.
            marketpulse.reactive.auth.KeysPending: await its ``fetch``, then call again with
                ``fetch=False``.
        """
        if self.verifier is None:
            raise self._denied(_NO_PROVIDER)
        from marketpulse.reactive.auth import InvalidToken

        try:
            return _user(self.verifier.verify(token, fetch=fetch))
        except InvalidToken as exc:
            raise self._refused(exc) from None

    async def user_async(self, token: str) -> Caller:
        """:meth:`user`, fetching the provider's keys when needed.

        Raises:
            AccessDenied: the token is refused.
        """
        if self.verifier is None:
            raise self._denied(_NO_PROVIDER)
        from marketpulse.reactive.auth import InvalidToken

        try:
            return _user(await self.verifier.verify_async(token))
        except InvalidToken as exc:
            raise self._refused(exc) from None

    def websocket(
        self,
        token_type: str,
        value: str | None,
        acting_as: dict[str, Any] | None,
        *,
        fetch: bool = True,
    ) -> Caller:
        """Decide an ``Authenticate`` message (``fetch``: as for :meth:`user`).

        Raises:
            AccessDenied: the token is refused (send AuthError and close).
            marketpulse.reactive.auth.KeysPending: a user token needs keys being fetched.
        """
        if token_type == "None":
            return ANONYMOUS
        if token_type == "Admin":
            if value is not None and self._is_admin_key(value):
                return Caller("admin", acting_as)
            raise self._denied("Invalid admin key")
        return self.user(value or "", fetch=fetch)

    async def http(self, authorization: str | None) -> Caller:
        """Decide an HTTP ``Authorization`` header.

        Raises:
            AccessDenied: the header is present but refused (answer 401).
        """
        if not authorization:
            return ANONYMOUS
        scheme, _, credentials = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "convex":
            credentials = credentials.strip()
            # ``<key>`` or ``<key>:<base64 identity>``: the key itself may hold a colon (it is
            # whatever MARKETPULSE_ADMIN_KEY says, and the WebSocket takes it whole), base64
            # never does.
            key, sep, encoded_identity = credentials, "", ""
            if not self._is_admin_key(credentials):
                key, sep, encoded_identity = credentials.rpartition(":")
                if not sep or not self._is_admin_key(key):
                    raise self._denied("Invalid admin key")
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
            return await self.user_async(credentials.strip())
        raise self._denied("Unsupported Authorization scheme")


def _user(verified: VerifiedToken) -> Caller:
    return Caller("user", verified.identity, verified.expires_at)
