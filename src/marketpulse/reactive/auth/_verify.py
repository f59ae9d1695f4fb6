"""User token verification: a JWT against the configured providers, with PyJWT.

:meth:`TokenVerifier.verify` is synchronous and only reads cached keys. When it needs keys it
does not have (the first token of a provider, or an unknown ``kid``) it raises
:class:`KeysPending` with the fetch to wait for; after it, the second call decides.
:meth:`TokenVerifier.verify_async` does both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTokenError,
    MissingRequiredClaimError,
)

from ._config import ALGORITHMS, AuthConfig, Provider
from ._identity import user_identity
from ._jwks import FETCH_TIMEOUT_S, JwksCache

__all__ = ["InvalidToken", "KeysPending", "TokenVerifier", "VerifiedToken"]

MAX_TOKEN_BYTES = 16 * 1024


class InvalidToken(Exception):
    """The token is refused; the message says why and is safe to show the client."""


class KeysPending(Exception):
    """The token needs keys being fetched: await :attr:`fetch`, then verify again."""

    def __init__(self, fetch: asyncio.Task[None]) -> None:
        super().__init__("fetching the provider's keys")
        self.fetch = fetch


@dataclass(frozen=True)
class VerifiedToken:
    """A token that passed: the caller's ``UserIdentity`` and when it stops being valid."""

    identity: dict[str, Any]
    expires_at: float
    """Unix seconds (the ``exp`` claim)."""


class TokenVerifier:
    """Checks user JWTs: signature, issuer, audience, expiry and not-before.

    Args:
        config: the providers.
        leeway_s: clock skew tolerated on ``exp`` and ``nbf``.
        min_refresh_s: least time between key fetches caused by unknown key ids.
        max_age_s: fetched keys older than this are refetched in the background.
    """

    def __init__(
        self,
        config: AuthConfig,
        *,
        leeway_s: float = 5.0,
        min_refresh_s: float = 10.0,
        max_age_s: float = 3600.0,
    ) -> None:
        self.leeway_s = leeway_s
        self._http: httpx.AsyncClient | None = None
        self.caches = [
            JwksCache(p, self._client, min_refresh_s=min_refresh_s, max_age_s=max_age_s)
            for p in config.providers
        ]

    def __repr__(self) -> str:
        return f"TokenVerifier({[c.provider.issuer for c in self.caches]})"

    @property
    def providers(self) -> list[Provider]:
        """The configured providers."""
        return [c.provider for c in self.caches]

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=False)
        return self._http

    async def aclose(self) -> None:
        """Close the HTTP client, after the fetches under way."""
        pending = [c._task for c in self.caches if c._task is not None and not c._task.done()]
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def warm_up(self) -> None:
        """Start fetching every remote provider's keys (call inside the running loop)."""
        for cache in self.caches:
            if cache.may_refresh():
                cache.refresh()

    async def verify_async(self, token: str) -> VerifiedToken:
        """:meth:`verify`, fetching keys when it needs to.

        Raises:
            InvalidToken: refused.
        """
        try:
            return self.verify(token)
        except KeysPending as pending:
            await pending.fetch
        return self.verify(token, fetch=False)

    def verify(self, token: str, *, fetch: bool = True) -> VerifiedToken:
        """Check ``token`` against the cached keys.

        Args:
            token: the JWT.
            fetch: whether keys it needs may be fetched (KeysPending); False once they were
                (the second call decides, even when refreshes may run back to back).

        Raises:
            InvalidToken: refused.
            KeysPending: its provider's keys must be fetched first.
        """
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("Token is too large")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except InvalidTokenError:
            raise InvalidToken("Token is not a JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise InvalidToken(f"Token algorithm {alg!r} is not accepted (RS256 or ES256)")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str):
            raise InvalidToken("Token has no 'iss' claim")
        candidates = [c for c in self.caches if c.provider.matches(issuer)]
        if not candidates:
            raise InvalidToken(
                f"No auth provider found matching the given token (issuer {issuer!r}); "
                f"configured: {_issuers(self.caches)}"
            )
        # As Convex: the provider is the one whose issuer and application ID both match, so
        # one issuer may be configured once per application (web, mobile...).
        audiences = _audiences(unverified.get("aud"))
        candidates = [
            c
            for c in candidates
            if c.provider.application_id is None or c.provider.application_id in audiences
        ]
        if not candidates:
            if "aud" not in unverified:
                raise InvalidToken("Token is missing the 'aud' claim")
            ids = " or ".join(
                repr(c.provider.application_id) for c in self.caches if c.provider.matches(issuer)
            )
            raise InvalidToken(f"Token audience does not match the application ID {ids}")
        kid = header.get("kid")
        errors: list[str] = []
        for cache in candidates:
            if alg not in cache.provider.algorithms:
                errors.append(f"algorithm {alg} is not {'/'.join(cache.provider.algorithms)}")
                continue
            key = cache.get(kid if isinstance(kid, str) else None)
            if key is None:
                if fetch and cache.may_refresh():
                    raise KeysPending(cache.refresh())
                errors.append(cache.last_error or f"no signing key with kid {kid!r}")
                continue
            return self._decode(token, key, alg, cache.provider)
        raise InvalidToken("Could not verify token: " + "; ".join(errors))

    def _decode(self, token: str, key: jwt.PyJWK, alg: str, provider: Provider) -> VerifiedToken:
        required = ["iss", "sub", "exp"]
        if provider.application_id is not None:
            required.append("aud")
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=provider.application_id,
                # Compared by the provider (trailing slash tolerated), after the signature.
                options={
                    "require": required,
                    "verify_aud": provider.application_id is not None,
                    "verify_iss": False,
                    # As Convex: an issue time ahead of our clock is no reason to refuse (exp
                    # and nbf decide); PyJWT refused it, naming nbf, past a 5 s skew.
                    "verify_iat": False,
                },
                leeway=self.leeway_s,
            )
        except ExpiredSignatureError:
            raise InvalidToken("Token expired") from None
        except ImmatureSignatureError:
            raise InvalidToken("Token is not valid yet (nbf)") from None
        except InvalidAudienceError:
            raise InvalidToken(
                f"Token audience does not match the application ID {provider.application_id!r}"
            ) from None
        except InvalidIssuerError:  # pragma: no cover - issuer is checked below
            raise InvalidToken("Token issuer does not match") from None
        except InvalidSignatureError:
            raise InvalidToken("Token signature is invalid") from None
        except MissingRequiredClaimError as exc:
            raise InvalidToken(f"Token is missing the {exc.claim!r} claim") from None
        except InvalidTokenError as exc:
            raise InvalidToken(f"Invalid token: {exc}") from None
        if not provider.matches(str(claims["iss"])):  # pragma: no cover - matched before
            raise InvalidToken("Token issuer does not match")
        try:
            identity = user_identity(claims)
        except ValueError as exc:
            raise InvalidToken(str(exc)) from None
        return VerifiedToken(identity, float(claims["exp"]))


def _audiences(aud: Any) -> list[str]:
    """A token's ``aud`` claim (a string or a list of them) as a list."""
    if isinstance(aud, str):
        return [aud]
    return [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []


def _issuers(caches: Iterable[JwksCache]) -> str:
    return ", ".join(repr(c.provider.issuer) for c in caches) or "none"
