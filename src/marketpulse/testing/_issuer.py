"""A JWT issuer a test runs itself: OpenID discovery and a JWKS over HTTP on 127.0.0.1.

Tokens are signed with :class:`~marketpulse.reactive.auth.SigningKey` (PyJWT); keys are made
with ``cryptography``. Which keys the JWKS publishes is the test's choice, so it can rotate
keys, sign with one the JWKS does not (yet) list, and count the store's fetches.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

from marketpulse.reactive.auth import SigningKey
from marketpulse.testing._loopback import LoopbackHttpServer

__all__ = ["JwtIssuer"]

JWKS_PATH = "/.well-known/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"


class JwtIssuer(LoopbackHttpServer):
    """An OIDC-style issuer on a free port of 127.0.0.1, in a thread; a context manager.

    Args:
        algorithm: the algorithm of its first key.
        application_id: the ``aud`` of its tokens by default.
    """

    def __init__(
        self, algorithm: Literal["RS256", "ES256"] = "RS256", application_id: str = "test-app"
    ) -> None:
        self.application_id = application_id
        self.key = SigningKey.generate(algorithm)
        self.published: list[SigningKey] = [self.key]
        self.jwks_requests = 0
        self.discovery_requests = 0
        self._lock = threading.Lock()
        super().__init__()

    @property
    def url(self) -> str:
        """Its base URL, which is also its ``iss``."""
        return self.base_url

    @property
    def jwks_url(self) -> str:
        """Where its JWKS is served."""
        return self.url + JWKS_PATH

    def jwks(self) -> dict[str, Any]:
        """The JWKS it publishes now."""
        with self._lock:
            return {"keys": [dict(k.public_jwk) for k in self.published]}

    def oidc_provider(self) -> dict[str, Any]:
        """Its entry in an auth config as an OIDC provider."""
        return {"domain": self.url, "applicationID": self.application_id}

    def custom_jwt_provider(self, *, inline: bool = False) -> dict[str, Any]:
        """Its entry in an auth config as a custom-JWT provider (JWKS by URL or inline)."""
        return {
            "type": "customJwt",
            "issuer": self.url,
            "jwks": self.jwks() if inline else self.jwks_url,
            "algorithm": self.key.algorithm,
            "applicationID": self.application_id,
        }

    def token(
        self,
        subject: str,
        *,
        key: SigningKey | None = None,
        lifetime_s: float = 3600.0,
        now: float | None = None,
        headers: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A token for ``subject``; ``claims`` override ``iss``/``aud`` or add more."""
        return (key or self.key).sign(
            {"iss": self.url, "sub": subject, "aud": self.application_id, **claims},
            lifetime_s=lifetime_s,
            now=now,
            headers=headers,
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == DISCOVERY_PATH:
                    with issuer._lock:
                        issuer.discovery_requests += 1
                    body: Any = {"issuer": issuer.url, "jwks_uri": issuer.jwks_url}
                elif self.path == JWKS_PATH:
                    with issuer._lock:
                        issuer.jwks_requests += 1
                    body = issuer.jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        return Handler
