"""Token claims to Convex's ``UserIdentity``: camelCase standard fields, ``tokenIdentifier``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["user_identity"]

# OpenID Connect standard claims, by the UserIdentity field Convex names them.
_STANDARD = {
    "name": "name",
    "given_name": "givenName",
    "family_name": "familyName",
    "nickname": "nickname",
    "preferred_username": "preferredUsername",
    "profile": "profileUrl",
    "picture": "pictureUrl",
    "email": "email",
    "email_verified": "emailVerified",
    "gender": "gender",
    "birthdate": "birthday",
    "zoneinfo": "timezone",
    "locale": "language",
    "phone_number": "phoneNumber",
    "phone_number_verified": "phoneNumberVerified",
    "address": "address",
    "updated_at": "updatedAt",
}
# Claims about the token rather than the user: they change on every refresh, and keeping them
# out lets a refreshed token share its cached queries with the one it replaced.
_TOKEN_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "azp", "nonce"})


_INT64 = range(-(2**63), 2**63)
MAX_CLAIM_NESTING = 64
"""Claims nested deeper than this are refused (no Convex value nests deeper)."""


def _json_value(value: Any, depth: int = 1) -> Any:
    """A claim as a function in Convex (JavaScript) sees it: an integer beyond 64 bits is a
    float (no store value, key or client message can carry it as an integer).

    Raises:
        ValueError: nested deeper than :data:`MAX_CLAIM_NESTING`.
    """
    if isinstance(value, bool) or not isinstance(value, int | list | dict):
        return value
    if isinstance(value, int):
        if value in _INT64:
            return value
        try:
            return float(value)
        except OverflowError:
            return float("inf") if value > 0 else float("-inf")
    if depth >= MAX_CLAIM_NESTING:
        raise ValueError(f"Token claims are nested deeper than {MAX_CLAIM_NESTING} levels")
    if isinstance(value, list):
        return [_json_value(v, depth + 1) for v in value]
    return {k: _json_value(v, depth + 1) for k, v in value.items()}


def user_identity(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The ``UserIdentity`` of verified claims: ``tokenIdentifier`` (``issuer|subject``),
    ``subject``, ``issuer``, the standard fields present, and every custom claim as is
    (integers beyond 64 bits as floats, as JavaScript reads them).

    Raises:
        ValueError: claims nested deeper than :data:`MAX_CLAIM_NESTING`.
    """
    issuer = str(claims["iss"])
    subject = str(claims["sub"])
    identity: dict[str, Any] = {
        "tokenIdentifier": f"{issuer}|{subject}",
        "subject": subject,
        "issuer": issuer,
    }
    for claim, value in claims.items():
        if claim in _TOKEN_CLAIMS:
            continue
        field = _STANDARD.get(claim, claim)
        if field == "updatedAt" and isinstance(value, int | float):
            value = str(value)  # Convex types it as a string
        identity.setdefault(field, _json_value(value))
    return identity


def acting_as_identity(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The identity an admin acts as (the npm client's ``UserIdentityAttributes``): given
    fields as they are, plus ``tokenIdentifier`` when it can be made from issuer and subject."""
    identity = dict(attributes)
    issuer, subject = identity.get("issuer"), identity.get("subject")
    if "tokenIdentifier" not in identity and isinstance(issuer, str) and isinstance(subject, str):
        identity["tokenIdentifier"] = f"{issuer}|{subject}"
    return identity
