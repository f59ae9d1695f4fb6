"""Signing keys of an issuer we run ourselves (the dev identity provider, test issuers).

PyJWT signs and serializes; nothing here is cryptography of our own. A key's ``kid`` is its
RFC 7638 thumbprint, so it is stable across restarts without being stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

__all__ = ["SigningKey"]

_PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class SigningKey:
    """A private key that signs JWTs (RS256 or ES256), with its public JWK.

    Args:
        private_key: an RSA (RS256) or P-256 (ES256) private key.
        kid: the key id (default: the RFC 7638 thumbprint of the public key).
    """

    def __init__(self, private_key: _PrivateKey, kid: str | None = None) -> None:
        self._key = private_key
        if isinstance(private_key, rsa.RSAPrivateKey):
            self.algorithm: Literal["RS256", "ES256"] = "RS256"
            public = json.loads(RSAAlgorithm.to_jwk(private_key.public_key()))
            members: tuple[str, ...] = ("e", "kty", "n")
        else:
            self.algorithm = "ES256"
            public = json.loads(ECAlgorithm.to_jwk(private_key.public_key()))
            members = ("crv", "kty", "x", "y")
        # RFC 7638: the required members, sorted, no whitespace.
        canonical = json.dumps({m: public[m] for m in members}, separators=(",", ":"))
        self.kid = (
            kid or jwt.utils.base64url_encode(hashlib.sha256(canonical.encode()).digest()).decode()
        )
        self.public_jwk: dict[str, Any] = {
            **{m: public[m] for m in members},
            "kid": self.kid,
            "alg": self.algorithm,
            "use": "sig",
        }

    def __repr__(self) -> str:  # never show the key
        return f"SigningKey({self.algorithm}, kid={self.kid!r})"

    @classmethod
    def generate(
        cls, algorithm: Literal["RS256", "ES256"] = "ES256", kid: str | None = None
    ) -> SigningKey:
        """A fresh key."""
        if algorithm == "RS256":
            return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048), kid)
        return cls(ec.generate_private_key(ec.SECP256R1()), kid)

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """The ES256 key kept in ``path`` (PEM, mode 0600), made there on first use."""
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            key = cls.generate("ES256")
            path.parent.mkdir(parents=True, exist_ok=True)
            pem = key._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            return key
        os.chmod(path, 0o600)
        loaded = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path}: not an RSA or EC private key")
        return cls(loaded)

    def jwks(self) -> dict[str, Any]:
        """The JWKS publishing this key."""
        return {"keys": [dict(self.public_jwk)]}

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        lifetime_s: float = 3600.0,
        now: float | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed JWT with ``claims``, plus ``iat`` and ``exp`` unless given."""
        issued = int(time.time() if now is None else now)
        payload = {"iat": issued, "exp": issued + int(lifetime_s), **claims}
        return jwt.encode(
            payload,
            self._key,
            algorithm=self.algorithm,
            headers={"kid": self.kid, **(headers or {})},
        )
