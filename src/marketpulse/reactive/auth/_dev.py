"""The development identity provider: sign in by choosing a name, no account anywhere.

Served by the store itself under ``/auth/dev`` when ``serve --dev-auth-key PATH`` is given
(``marketpulse dev`` does, unless a real provider is configured). Its ES256 key lives in
``PATH`` (mode 0600). The store trusts it as a custom-JWT provider with the key inline, so
verification never calls back over HTTP; the JWKS and discovery endpoints are there for
other consumers. Anyone who can reach the store can sign in as any name: development only.

Endpoints (all under ``/auth/dev``):

* ``GET /config``: ``{issuer, applicationID, tokenUrl, signInUrl, jwksUrl}``;
* ``POST /token`` with ``{"name": ...}``: ``{token, expiresAt, subject, issuer}``, what a web
  app's ``fetchToken`` for ``ConvexClient.setAuth`` calls;
* ``GET /sign-in``: a page to choose a name; ``?redirect=/path`` sends the browser back to
  ``/path#token=<jwt>`` (same-origin paths only), otherwise the page shows the token;
* ``GET /.well-known/openid-configuration`` and ``GET /.well-known/jwks.json``.
"""

from __future__ import annotations

import html
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ._config import Provider
from ._keys import SigningKey

__all__ = ["DEV_APPLICATION_ID", "DEV_PREFIX", "DevIssuer"]

DEV_PREFIX = "/auth/dev"
DEV_APPLICATION_ID = "marketpulse-dev"
TOKEN_LIFETIME_S = 3600.0
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")


class DevIssuer:
    """The dev issuer: its key, its claims, its routes.

    Args:
        key: its signing key (see :meth:`SigningKey.load_or_create`).
        issuer: its ``iss``, the URL its routes are served under.
    """

    def __init__(self, key: SigningKey, issuer: str) -> None:
        self.key = key
        self.issuer = issuer.rstrip("/")

    @classmethod
    def from_key_file(
        cls, path: Path, host: str, port: int, *, base_url: str | None = None
    ) -> DevIssuer:
        """The issuer of a store on ``host:port``, its key kept in ``path``.

        ``base_url`` is where users reach it when that is elsewhere: nodes behind one balancer
        share the key file and the balancer's URL, so each accepts what any of them issued.
        """
        base = (base_url or f"http://{host}:{port}").rstrip("/")
        return cls(SigningKey.load_or_create(path), base + DEV_PREFIX)

    def provider(self) -> Provider:
        """The provider that trusts it (its key inline)."""
        return Provider(
            "customJwt",
            self.issuer,
            DEV_APPLICATION_ID,
            (self.key.algorithm,),
            jwks=self.key.jwks(),
        )

    def token(self, name: str, lifetime_s: float = TOKEN_LIFETIME_S) -> dict[str, Any]:
        """A signed token for the user called ``name``.

        Raises:
            ValueError: not a usable name (1-64 printable characters).
        """
        name = " ".join(name.split())
        if not _NAME.match(name):
            raise ValueError("name must be 1-64 printable characters")
        now = time.time()
        token = self.key.sign(
            {
                "iss": self.issuer,
                "sub": name,
                "aud": DEV_APPLICATION_ID,
                "name": name,
                "preferred_username": name,
            },
            lifetime_s=lifetime_s,
            now=now,
        )
        return {
            "token": token,
            "expiresAt": int(now + lifetime_s) * 1000,
            "subject": name,
            "issuer": self.issuer,
        }

    def config(self, base: str) -> dict[str, Any]:
        """What a web app needs to sign users in here (``base``: the store's URL)."""
        root = base.rstrip("/") + DEV_PREFIX
        return {
            "issuer": self.issuer,
            "applicationID": DEV_APPLICATION_ID,
            "algorithm": self.key.algorithm,
            "tokenUrl": root + "/token",
            "signInUrl": root + "/sign-in",
            "jwksUrl": root + "/.well-known/jwks.json",
        }

    def routes(self) -> list[BaseRoute]:
        """Its HTTP routes."""
        return [
            Route(DEV_PREFIX + "/config", self._config),
            Route(DEV_PREFIX + "/token", self._token, methods=["POST"]),
            Route(DEV_PREFIX + "/sign-in", self._sign_in, methods=["GET", "POST"]),
            Route(DEV_PREFIX + "/.well-known/openid-configuration", self._discovery),
            Route(DEV_PREFIX + "/.well-known/jwks.json", self._jwks),
        ]

    async def _config(self, request: Request) -> Response:
        return JSONResponse(self.config(str(request.base_url)))

    async def _discovery(self, request: Request) -> Response:
        cfg = self.config(str(request.base_url))
        return JSONResponse(
            {
                "issuer": self.issuer,
                "jwks_uri": cfg["jwksUrl"],
                "authorization_endpoint": cfg["signInUrl"],
                "token_endpoint": cfg["tokenUrl"],
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [self.key.algorithm],
            }
        )

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse(self.key.jwks())

    async def _token(self, request: Request) -> Response:
        try:
            body = await request.json()
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str):
                raise ValueError('send {"name": "..."}')
            return JSONResponse(self.token(name))
        except ValueError as exc:
            return JSONResponse({"code": "BadRequest", "message": str(exc)}, status_code=400)

    async def _sign_in(self, request: Request) -> Response:
        redirect = request.query_params.get("redirect", "")
        # Same-origin paths only: a token must not be handed to another site.
        if not redirect.startswith("/") or redirect.startswith("//"):
            redirect = ""
        if request.method == "GET":
            return HTMLResponse(_page(redirect=redirect))
        # A urlencoded form of one field: parsed here rather than with another dependency.
        body = await request.body()
        name = parse_qs(body[:4096].decode(errors="replace")).get("name", [""])[0]
        try:
            issued = self.token(name)
        except ValueError as exc:
            return HTMLResponse(_page(redirect=redirect, error=str(exc)), status_code=400)
        if redirect:
            return RedirectResponse(f"{redirect}#token={issued['token']}", status_code=303)
        return HTMLResponse(_page(redirect="", token=issued["token"], name=issued["subject"]))


def _page(*, redirect: str, error: str = "", token: str = "", name: str = "") -> str:
    action = DEV_PREFIX + "/sign-in" + (f"?redirect={html.escape(redirect)}" if redirect else "")
    body = (
        f"<p>Signed in as <b>{html.escape(name)}</b>. Token:</p>"
        f"<textarea id='token' readonly rows='6' cols='80'>{html.escape(token)}</textarea>"
        if token
        else (
            f"<form method='post' action='{action}'>"
            "<label>Name <input name='name' autofocus required maxlength='64'></label> "
            "<button type='submit'>Sign in</button></form>"
            + (f"<p role='alert'>{html.escape(error)}</p>" if error else "")
        )
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>marketpulse dev sign-in</title>"
        "</head><body><h1>marketpulse: development sign-in</h1>"
        "<p>Choose any name; no password. Development only.</p>" + body + "</body></html>"
    )
