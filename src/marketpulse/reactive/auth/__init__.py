"""User identity the Convex way: auth providers, token verification, the dev issuer.

Configure providers like Convex's ``auth.config`` (:func:`load_auth_config`), verify user
JWTs with :class:`TokenVerifier` (PyJWT: signature, issuer, audience, expiry, not-before;
keys from JWKS, cached and refreshed on an unknown ``kid``), and sign users in during
development with :class:`DevIssuer`. See docs/store.md, "Users and auth".
"""

from typing import TYPE_CHECKING

from marketpulse._lazy import lazy_import

__all__ = [
    "AuthConfig",
    "AuthConfigError",
    "DevIssuer",
    "InvalidToken",
    "KeysPending",
    "Provider",
    "SigningKey",
    "TokenVerifier",
    "VerifiedToken",
    "load_auth_config",
]

if TYPE_CHECKING:
    from ._config import AuthConfig, AuthConfigError, Provider, load_auth_config
    from ._dev import DevIssuer
    from ._keys import SigningKey
    from ._verify import InvalidToken, KeysPending, TokenVerifier, VerifiedToken
else:
    lazy_import(
        globals(),
        {
            "AuthConfig": "._config",
            "AuthConfigError": "._config",
            "Provider": "._config",
            "load_auth_config": "._config",
            "DevIssuer": "._dev",
            "SigningKey": "._keys",
            "InvalidToken": "._verify",
            "KeysPending": "._verify",
            "TokenVerifier": "._verify",
            "VerifiedToken": "._verify",
        },
    )
