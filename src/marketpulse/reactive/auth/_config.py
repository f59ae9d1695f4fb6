"""Auth providers, configured like Convex's ``convex/auth.config.ts``.

The file (JSON, or TOML by its ``.toml`` suffix) holds ``{"providers": [...]}``, each one of:

* OIDC: ``{"domain": "https://issuer.example", "applicationID": "my-app"}``: tokens must
  have ``iss`` = the domain and ``aud`` = the application ID; keys come from the domain's
  ``/.well-known/openid-configuration`` ``jwks_uri``.
* Custom JWT: ``{"type": "customJwt", "issuer": ..., "jwks": URL | data: URI | {"keys": ...},
  "algorithm": "RS256" | "ES256", "applicationID"?: ...}``: without an application ID the
  audience is not checked, as in Convex.
"""

from __future__ import annotations

import base64
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

__all__ = ["ALGORITHMS", "AuthConfig", "AuthConfigError", "Provider", "load_auth_config"]

ALGORITHMS = ("RS256", "ES256")
"""The signature algorithms a provider may use (``none`` and HMAC never)."""


class AuthConfigError(ValueError):
    """The auth configuration is malformed; the message names the provider and field."""


@dataclass(frozen=True)
class Provider:
    """One identity provider.

    Attributes:
        kind: ``oidc`` (keys by discovery) or ``customJwt`` (keys from ``jwks``).
        issuer: the ``iss`` its tokens carry.
        application_id: the ``aud`` its tokens must carry; None skips the check (custom JWT).
        algorithms: the ``alg`` values accepted.
        jwks_url: where its JWKS is fetched (custom JWT with a URL).
        jwks: its inline JWKS (custom JWT with inline keys, or the dev issuer).
        discovery_url: its OpenID discovery document (OIDC).
    """

    kind: Literal["oidc", "customJwt"]
    issuer: str
    application_id: str | None
    algorithms: tuple[str, ...]
    jwks_url: str | None = None
    jwks: dict[str, Any] | None = None
    discovery_url: str | None = None

    def matches(self, issuer: str) -> bool:
        """Whether a token's ``iss`` names this provider (a trailing slash is not significant)."""
        return issuer.rstrip("/") == self.issuer.rstrip("/")


@dataclass(frozen=True)
class AuthConfig:
    """The providers a deployment accepts tokens from."""

    providers: tuple[Provider, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.providers)


def _str(raw: dict[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise AuthConfigError(f"{where}: {key!r} must be a non-empty string")
    return value.strip()


def _inline_jwks(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, str):  # data:[<type>][;base64],<payload>
        header, sep, payload = value.partition(",")
        if not sep:
            raise AuthConfigError(f"{where}: malformed data: URI in 'jwks'")
        raw = base64.b64decode(payload) if header.endswith(";base64") else unquote_to_bytes(payload)
        try:
            value = json.loads(raw)
        except ValueError:
            raise AuthConfigError(f"{where}: the data: URI in 'jwks' is not JSON") from None
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        raise AuthConfigError(f"{where}: 'jwks' must be a URL or a JWKS with a 'keys' list")
    return value


def _provider(raw: Any, index: int) -> Provider:
    where = f"auth config providers[{index}]"
    if not isinstance(raw, dict):
        raise AuthConfigError(f"{where}: must be an object")
    kind = raw.get("type", "oidc")
    if kind == "oidc":
        domain = _str(raw, "domain", where)
        app_id = _str(raw, "applicationID", where)
        assert domain is not None
        if not domain.startswith(("https://", "http://")):
            raise AuthConfigError(f"{where}: 'domain' must be an http(s) URL")
        return Provider(
            "oidc",
            domain,
            app_id,
            ALGORITHMS,
            discovery_url=domain.rstrip("/") + "/.well-known/openid-configuration",
        )
    if kind != "customJwt":
        raise AuthConfigError(f"{where}: unknown provider type {kind!r} (oidc or customJwt)")
    issuer = _str(raw, "issuer", where)
    assert issuer is not None
    algorithm = raw.get("algorithm")
    if algorithm not in ALGORITHMS:
        raise AuthConfigError(f"{where}: 'algorithm' must be one of {', '.join(ALGORITHMS)}")
    jwks = raw.get("jwks")
    if isinstance(jwks, str) and jwks.startswith(("https://", "http://")):
        url, inline = jwks, None
    elif jwks is None:
        raise AuthConfigError(f"{where}: 'jwks' is required (a URL, a data: URI or a JWKS)")
    else:
        url, inline = None, _inline_jwks(jwks, where)
    return Provider(
        "customJwt",
        issuer,
        _str(raw, "applicationID", where, required=False),
        (algorithm,),
        jwks_url=url,
        jwks=inline,
    )


def parse_auth_config(data: Any) -> AuthConfig:
    """An :class:`AuthConfig` from the decoded file.

    Raises:
        AuthConfigError: malformed.
    """
    if not isinstance(data, dict) or not isinstance(data.get("providers"), list):
        raise AuthConfigError("auth config must be an object with a 'providers' list")
    return AuthConfig(tuple(_provider(p, i) for i, p in enumerate(data["providers"])))


def load_auth_config(source: str | Path) -> AuthConfig:
    """Read an auth config: a JSON or TOML file, or JSON text itself (starting with ``{``).

    Raises:
        AuthConfigError: unreadable or malformed.
    """
    text = str(source).strip()
    if isinstance(source, str) and text.startswith("{"):
        try:
            return parse_auth_config(json.loads(text))
        except ValueError as exc:
            if isinstance(exc, AuthConfigError):
                raise
            raise AuthConfigError(f"auth config is not valid JSON: {exc}") from None
    path = Path(source).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AuthConfigError(f"cannot read auth config {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuthConfigError(f"auth config {path} is not valid: {exc}") from None
    return parse_auth_config(data)
