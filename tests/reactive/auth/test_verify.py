"""TokenVerifier against a real issuer (JWKS and discovery over HTTP on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import jwt
import pytest

from marketpulse.reactive.auth import (
    AuthConfigError,
    InvalidToken,
    KeysPending,
    SigningKey,
    TokenVerifier,
    VerifiedToken,
    _jwks,
)
from marketpulse.reactive.auth._config import parse_auth_config
from marketpulse.testing import JwtIssuer


@pytest.fixture
def issuer() -> Iterator[JwtIssuer]:
    with JwtIssuer("RS256") as it:
        yield it


@pytest.fixture
def es_issuer() -> Iterator[JwtIssuer]:
    with JwtIssuer("ES256", application_id="es-app") as it:
        yield it


def verifier(*providers: dict[str, Any], **options: Any) -> TokenVerifier:
    return TokenVerifier(parse_auth_config({"providers": list(providers)}), **options)


async def verify(v: TokenVerifier, token: str) -> VerifiedToken:
    try:
        return await v.verify_async(token)
    finally:
        await v.aclose()


async def refused(v: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as info:
        await v.verify_async(token)
    return str(info.value)


async def test_oidc_rs256_and_es256_give_convex_user_identities(
    issuer: JwtIssuer, es_issuer: JwtIssuer
) -> None:
    v = verifier(issuer.oidc_provider(), es_issuer.oidc_provider())
    try:
        token = issuer.token(
            "alice", name="Alice", email="a@example.com", email_verified=True, team="red"
        )
        got = await v.verify_async(token)
        assert got.identity == {
            "tokenIdentifier": f"{issuer.url}|alice",
            "subject": "alice",
            "issuer": issuer.url,
            "name": "Alice",
            "email": "a@example.com",
            "emailVerified": True,
            "team": "red",
        }
        assert got.expires_at == jwt.decode(token, options={"verify_signature": False})["exp"]
        es = await v.verify_async(es_issuer.token("bob", given_name="Bob", locale="fr"))
        assert es.identity["tokenIdentifier"] == f"{es_issuer.url}|bob"
        assert es.identity["givenName"] == "Bob" and es.identity["language"] == "fr"
        # Discovery then JWKS, once each: later tokens are checked from the cache.
        await v.verify_async(issuer.token("carol"))
        assert (issuer.discovery_requests, issuer.jwks_requests) == (1, 1)
    finally:
        await v.aclose()


async def test_custom_jwt_by_url_and_inline(issuer: JwtIssuer, es_issuer: JwtIssuer) -> None:
    by_url = verifier(issuer.custom_jwt_provider())
    assert (await verify(by_url, issuer.token("u"))).identity["subject"] == "u"
    assert issuer.discovery_requests == 0 and issuer.jwks_requests == 1
    inline = verifier(es_issuer.custom_jwt_provider(inline=True))
    assert inline.verify(es_issuer.token("v")).identity["subject"] == "v"  # no fetch at all
    assert es_issuer.jwks_requests == 0
    # A data: URI, as Convex accepts for inline keys.
    data_uri = (
        "data:text/plain;charset=utf-8;base64,"
        + base64.b64encode(json.dumps(es_issuer.jwks()).encode()).decode()
    )
    entry = {**es_issuer.custom_jwt_provider(), "jwks": data_uri}
    assert verifier(entry).verify(es_issuer.token("w")).identity["subject"] == "w"
    # Without an applicationID the audience is not checked (Convex's custom JWT rule).
    entry = {**es_issuer.custom_jwt_provider(inline=True)}
    del entry["applicationID"]
    assert verifier(entry).verify(es_issuer.token("x", aud="anything")).identity["subject"] == "x"


async def test_refusals(issuer: JwtIssuer) -> None:
    v = verifier(issuer.oidc_provider())
    try:
        assert (await v.verify_async(issuer.token("ok"))).identity["subject"] == "ok"
        assert "audience" in await refused(v, issuer.token("a", aud="other-app"))
        assert "No auth provider" in await refused(v, issuer.token("a", iss="http://127.0.0.1:9"))
        assert "expired" in await refused(v, issuer.token("a", now=time.time() - 7200))
        assert "not valid yet" in await refused(v, issuer.token("a", nbf=int(time.time()) + 600))
        assert "'sub'" in await refused(
            v, issuer.key.sign({"iss": issuer.url, "aud": issuer.application_id})
        )
        # Signed by another key under the published kid: the signature does not verify.
        forged = SigningKey.generate("RS256", kid=issuer.key.kid)
        assert "signature" in await refused(v, issuer.token("a", key=forged))
        # alg "none" and HMAC (with the public key as the secret, the classic confusion).
        claims = {"iss": issuer.url, "sub": "a", "aud": issuer.application_id}
        claims["exp"] = int(time.time()) + 60
        none_token = jwt.encode(claims, None, algorithm="none")
        assert "'none'" in await refused(v, none_token)
        hs_token = jwt.encode(claims, "x" * 32, algorithm="HS256")
        assert "'HS256'" in await refused(v, hs_token)
        assert "not a JWT" in await refused(v, "a.b.c")
    finally:
        await v.aclose()


async def test_unknown_kid_refetches_at_a_bounded_rate(issuer: JwtIssuer) -> None:
    v = verifier(issuer.oidc_provider(), min_refresh_s=0.5)
    try:
        await v.verify_async(issuer.token("a"))
        assert issuer.jwks_requests == 1
        # The issuer rotates in a new key: the unknown kid triggers a refresh that finds it.
        await asyncio.sleep(0.6)
        new = SigningKey.generate("ES256")
        issuer.published.append(new)
        assert (await v.verify_async(issuer.token("b", key=new))).identity["subject"] == "b"
        assert issuer.jwks_requests == 2
        # A key the issuer never publishes: refused after a refresh...
        await asyncio.sleep(0.6)
        rogue = SigningKey.generate("RS256")
        message = await refused(v, issuer.token("c", key=rogue))
        assert "no signing key" in message and issuer.jwks_requests == 3
        # ...and a burst of made-up kids within the interval fetches nothing more.
        for i in range(20):
            token = issuer.token("c", key=SigningKey.generate("ES256", kid=f"made-up-{i}"))
            with pytest.raises(InvalidToken):
                v.verify(token)
        assert issuer.jwks_requests == 3
    finally:
        await v.aclose()


async def test_first_token_waits_for_keys_then_the_cache_serves(issuer: JwtIssuer) -> None:
    v = verifier(issuer.oidc_provider())
    try:
        token = issuer.token("a")
        with pytest.raises(KeysPending) as pending:
            v.verify(token)
        # Concurrent needs share the one fetch.
        with pytest.raises(KeysPending) as again:
            v.verify(issuer.token("b"))
        assert again.value.fetch is pending.value.fetch
        await pending.value.fetch
        assert v.verify(token).identity["subject"] == "a"
        assert issuer.jwks_requests == 1
    finally:
        await v.aclose()


async def test_an_unreachable_issuer_is_a_clear_refusal() -> None:
    with JwtIssuer() as gone:
        entry = gone.oidc_provider()
        token = gone.token("a")
    v = verifier(entry)
    try:
        message = await refused(v, token)
        assert "cannot fetch the keys" in message and gone.url in message
    finally:
        await v.aclose()


@pytest.mark.parametrize(
    ("providers", "error"),
    [
        ([{"domain": "https://x"}], "'applicationID'"),
        ([{"domain": "ftp://x", "applicationID": "a"}], "http(s) URL"),
        (
            [{"type": "customJwt", "issuer": "i", "jwks": "https://j", "algorithm": "HS256"}],
            "RS256",
        ),
        ([{"type": "customJwt", "issuer": "i", "algorithm": "RS256"}], "'jwks' is required"),
        ([{"type": "saml"}], "unknown provider type"),
        ("nope", "'providers' list"),
    ],
)
def test_malformed_configs_say_what_is_wrong(providers: Any, error: str) -> None:
    with pytest.raises(AuthConfigError, match=error.replace("(", r"\(").replace(")", r"\)")):
        parse_auth_config({"providers": providers})


class TricklingIssuer(JwtIssuer):
    """Sends its JWKS one byte every 0.2 s: never long without data, never done."""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        base = super()._handler()
        issuer = self

        class Handler(base):  # type: ignore[valid-type,misc]
            def do_GET(self) -> None:
                if self.path != issuer.jwks_url.removeprefix(issuer.url):
                    return base.do_GET(self)  # type: ignore[no-any-return]
                data = json.dumps(issuer.jwks()).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                try:
                    for byte in data[:100]:  # 20 s at most
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.2)
                    self.wfile.write(data[100:])
                except OSError:
                    pass  # the store gave up

        return Handler


async def test_a_trickling_jwks_is_given_up_on_after_the_fetch_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_jwks, "FETCH_TIMEOUT_S", 1.0, raising=False)
    with TricklingIssuer("RS256") as issuer:
        v = verifier(issuer.custom_jwt_provider())
        try:
            started = time.monotonic()
            message = await refused(v, issuer.token("a"))
            assert "did not answer within 1 s" in message and issuer.jwks_url in message
            assert time.monotonic() - started < 3
        finally:
            await v.aclose()


class OddIssuer(JwtIssuer):
    """An issuer whose documents a test bends: its keys without ``alg`` (as Microsoft's JWKS
    publishes them) beside keys PyJWT cannot load, or any JWKS and ``jwks_uri`` at all."""

    document: Any = None
    uri: str | None = None

    def jwks(self) -> dict[str, Any]:
        if self.document is not None:
            return self.document  # type: ignore[no-any-return]
        keys: list[Any] = [
            {k: v for k, v in key.items() if k != "alg"} for key in super().jwks()["keys"]
        ]
        keys += [
            {"kty": "RSA", "kid": "short", "n": "AQ", "e": "AQAB"},
            {"kty": "EC", "kid": "curve", "crv": "P-999", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": ["not", "a", "string"], "n": "AQ", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            "not a key",
        ]
        return {"keys": keys}

    @property
    def jwks_url(self) -> str:
        return self.uri if self.uri is not None else super().jwks_url


async def test_keys_without_alg_and_keys_pyjwt_cannot_load_do_not_cost_the_others() -> None:
    with OddIssuer("RS256") as issuer:
        es = SigningKey.generate("ES256")
        issuer.published.append(es)
        v = verifier(issuer.oidc_provider())
        try:
            assert (await v.verify_async(issuer.token("rs"))).identity["subject"] == "rs"
            assert (await v.verify_async(issuer.token("es", key=es))).identity["subject"] == "es"
            assert issuer.jwks_requests == 1
        finally:
            await v.aclose()


async def test_a_broken_key_document_is_a_failed_fetch_and_the_keys_held_stay() -> None:
    with OddIssuer("RS256") as issuer:
        v = verifier(issuer.oidc_provider(), min_refresh_s=0.2)
        try:
            token = issuer.token("a")
            assert (await v.verify_async(token)).identity["subject"] == "a"
            for document in ({"keys": []}, {"keys": "none"}, ["garbage"]):
                issuer.document = document
                await asyncio.sleep(0.25)
                unknown = issuer.token("b", key=SigningKey.generate("RS256"))
                message = await refused(v, unknown)
                assert "no usable RS256/ES256 signing key" in message, message
                # The keys fetched before still verify.
                assert v.verify(token).identity["subject"] == "a"
        finally:
            await v.aclose()


@pytest.mark.parametrize("uri", ["http://[::1", "http://127.0.0.1:99999/jwks", "http://a\x00b/"])
async def test_a_jwks_uri_httpx_cannot_fetch_is_a_clear_refusal(uri: str) -> None:
    with OddIssuer("RS256") as issuer:
        issuer.uri = uri
        v = verifier(issuer.oidc_provider())
        try:
            message = await refused(v, issuer.token("a"))
            assert "cannot fetch the keys" in message and issuer.url in message
        finally:
            await v.aclose()


async def test_one_issuer_with_an_application_id_per_app_picks_its_provider_by_audience(
    issuer: JwtIssuer,
) -> None:
    # As Convex's auth.config: the same domain once per application ID (web, mobile).
    v = verifier(
        {"domain": issuer.url, "applicationID": "web"},
        {"domain": issuer.url, "applicationID": "mobile"},
    )
    try:
        for aud in ("web", "mobile", ["other", "mobile"]):
            got = await v.verify_async(issuer.token("alice", aud=aud))
            assert got.identity["tokenIdentifier"] == f"{issuer.url}|alice"
        message = await refused(v, issuer.token("alice", aud="desktop"))
        assert message == "Token audience does not match the application ID 'web' or 'mobile'"
        no_aud = issuer.key.sign({"iss": issuer.url, "sub": "alice"})
        assert await refused(v, no_aud) == "Token is missing the 'aud' claim"
    finally:
        await v.aclose()


async def test_with_refreshes_allowed_back_to_back_an_unknown_key_is_still_named(
    issuer: JwtIssuer,
) -> None:
    # MARKETPULSE_AUTH_JWKS_MIN_REFRESH_S=0: the second look, after the fetch, decides; it
    # said "the provider's keys are still being fetched" before.
    v = verifier(issuer.oidc_provider(), min_refresh_s=0)
    try:
        rogue = issuer.token("m", key=SigningKey.generate("RS256"))
        for _ in range(2):
            assert "no signing key with kid" in await refused(v, rogue)
        assert (await v.verify_async(issuer.token("ok"))).identity["subject"] == "ok"
    finally:
        await v.aclose()


async def test_claims_are_what_a_javascript_function_would_read(issuer: JwtIssuer) -> None:
    v = verifier(issuer.oidc_provider())
    try:
        token = issuer.token("big", account=2**70, ids=[7, -(10**400)], org={"n": 2**64, "k": 5})
        identity = (await v.verify_async(token)).identity
        assert identity["account"] == float(2**70) and isinstance(identity["account"], float)
        assert identity["ids"] == [7, float("-inf")] and isinstance(identity["ids"][0], int)
        assert identity["org"] == {"n": float(2**64), "k": 5}
        deep: Any = "x"
        for _ in range(70):
            deep = [deep]
        message = await refused(v, issuer.token("deep", nest=deep))
        assert message == "Token claims are nested deeper than 64 levels"
    finally:
        await v.aclose()


async def test_an_issue_time_ahead_of_our_clock_is_accepted_nbf_still_decides(
    issuer: JwtIssuer,
) -> None:
    # An issuer whose clock runs 30 s ahead, with no nbf (as Auth0's and Firebase's tokens):
    # refused before as "not valid yet (nbf)"; Convex accepts it.
    v = verifier(issuer.oidc_provider())
    try:
        ahead = issuer.token("skew", now=time.time() + 30)
        assert (await v.verify_async(ahead)).identity["subject"] == "skew"
        later = issuer.token("nbf", now=time.time() + 30, nbf=int(time.time()) + 30)
        assert await refused(v, later) == "Token is not valid yet (nbf)"
    finally:
        await v.aclose()
