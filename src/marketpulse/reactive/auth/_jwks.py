"""A provider's signing keys: fetched with httpx, cached, refreshed on an unknown ``kid``.

Verification is synchronous and reads only this cache. A fetch happens off that path: on the
first token, on a ``kid`` the cache does not know (at most once per ``min_refresh_s``, so a
stream of tokens with made-up key ids cannot make us hammer the issuer), and in the background
once the keys are older than ``max_age_s``. Concurrent needs share one fetch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import structlog
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from ._config import Provider

__all__ = ["JwksCache", "KeyFetchError"]

log = structlog.get_logger("marketpulse.auth")

MAX_DOCUMENT_BYTES = 256 * 1024
"""A discovery document or JWKS larger than this is refused."""

FETCH_TIMEOUT_S = 5.0
"""A discovery document or JWKS not received whole within this is a failed fetch (httpx's own
timeouts bound each read, not the answer: an issuer trickling bytes would hold every token
waiting for its keys)."""


class KeyFetchError(Exception):
    """The provider's keys could not be fetched; the message is safe to show."""


def parse_jwks(jwks: Any, algorithms: tuple[str, ...]) -> dict[str | None, PyJWK]:
    """The usable signing keys of a JWKS, by ``kid``: keys of other algorithms or types, and
    keys PyJWT cannot load, are skipped (one odd key must not cost the others)."""
    keys: dict[str | None, PyJWK] = {}
    raws = jwks.get("keys") if isinstance(jwks, dict) else None
    for raw in raws if isinstance(raws, list) else []:
        if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
            continue
        kid = raw.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        for alg in algorithms:
            if raw.get("alg", alg) != alg:
                continue
            try:
                # A key without "alg" is tried with each algorithm: an EC key is not an RSA
                # key, which PyJWT says with InvalidKeyError.
                keys.setdefault(kid, PyJWK(raw, algorithm=alg))
            except PyJWTError:
                continue
            break
    return keys


class JwksCache:
    """The keys of one provider.

    Args:
        provider: whose keys.
        client: the shared HTTP client (called on first fetch, inside the event loop).
        min_refresh_s: least time between two fetches caused by unknown key ids.
        max_age_s: keys older than this are refetched in the background.
    """

    def __init__(
        self,
        provider: Provider,
        client: Callable[[], httpx.AsyncClient],
        *,
        min_refresh_s: float = 10.0,
        max_age_s: float = 3600.0,
    ) -> None:
        self.provider = provider
        self._client = client
        self.min_refresh_s = min_refresh_s
        self.max_age_s = max_age_s
        self._keys: dict[str | None, PyJWK] = {}
        self._fetched_at: float | None = None
        self._jwks_url = provider.jwks_url
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self.fetches = 0
        if provider.jwks is not None:  # inline keys: never fetched
            self._keys = parse_jwks(provider.jwks, provider.algorithms)
            self._fetched_at = float("inf")

    @property
    def remote(self) -> bool:
        """Whether the keys come over HTTP."""
        return self.provider.jwks is None

    def get(self, kid: str | None) -> PyJWK | None:
        """The key for ``kid`` (a token without ``kid``: the only key, if there is one)."""
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        key = self._keys.get(kid)
        if key is not None and self._stale():
            self.refresh()  # in the background; the cached key serves meanwhile
        return key

    def _stale(self) -> bool:
        return (
            self.remote
            and self._fetched_at is not None
            and time.monotonic() - self._fetched_at > self.max_age_s
        )

    def may_refresh(self) -> bool:
        """Whether an unknown ``kid`` may trigger a fetch now."""
        if not self.remote:
            return False
        if self._task is not None and not self._task.done():
            return True
        return self._fetched_at is None or time.monotonic() - self._fetched_at >= self.min_refresh_s

    def refresh(self) -> asyncio.Task[None]:
        """Start a fetch (or join the one under way); the task never raises."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._fetch())
        return self._task

    async def _get_json(self, url: str) -> Any:
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_S):
                body = await self._get_body(url)
        except TimeoutError:
            raise KeyFetchError(f"{url} did not answer within {FETCH_TIMEOUT_S:g} s") from None
        try:
            return orjson.loads(bytes(body))
        except ValueError:
            raise KeyFetchError(f"{url} did not answer JSON") from None

    async def _get_body(self, url: str) -> bytes:
        async with self._client().stream("GET", url) as resp:
            if resp.status_code != 200:
                raise KeyFetchError(f"{url} answered HTTP {resp.status_code}")
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise KeyFetchError(f"{url} sent more than {MAX_DOCUMENT_BYTES} bytes")
        return bytes(body)

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            if self._jwks_url is None:
                assert self.provider.discovery_url is not None
                discovery = await self._get_json(self.provider.discovery_url)
                url = discovery.get("jwks_uri") if isinstance(discovery, dict) else None
                if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                    raise KeyFetchError(f"{self.provider.discovery_url} names no jwks_uri")
                self._jwks_url = url
            keys = parse_jwks(await self._get_json(self._jwks_url), self.provider.algorithms)
            if not keys:
                # Keep the keys held: a JWKS with none usable is a broken answer, not a rotation.
                raise KeyFetchError(
                    f"{self._jwks_url} has no usable {'/'.join(self.provider.algorithms)} signing key"
                )
        except Exception as exc:  # whatever the answer, the task never raises: waiters get why
            message = str(exc) if isinstance(exc, KeyFetchError) else type(exc).__name__
            self.last_error = f"cannot fetch the keys of {self.provider.issuer}: {message}"
            log.warning("jwks fetch failed", issuer=self.provider.issuer, error=message)
        else:
            self._keys = keys
            self.last_error = None
            log.info("jwks fetched", issuer=self.provider.issuer, keys=len(keys))
        finally:
            # Failures count too: a down issuer is retried at the same bounded rate.
            self._fetched_at = time.monotonic()
