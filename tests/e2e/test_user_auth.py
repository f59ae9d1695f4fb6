"""Signed-in users through the official clients: npm ``convex`` (``setAuth``) and PyPI
``convex`` (``set_auth``), against a real ``marketpulse serve`` trusting issuers the test runs
(JWKS and discovery over HTTP on 127.0.0.1, keys made with ``cryptography``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from convex import ConvexClient, ConvexError
from convex.http_client import ConvexHttpClient

from marketpulse.reactive.auth import SigningKey
from marketpulse.testing import JwtIssuer, StoreProcess
from scrape import metric

from .js_driver import JsDriver, node_available

pytestmark = pytest.mark.e2e

needs_node = pytest.mark.skipif(
    not node_available(), reason="node and tests/js/node_modules are needed (npm ci in tests/js)"
)


@pytest.fixture(scope="module")
def issuers() -> Iterator[tuple[JwtIssuer, JwtIssuer]]:
    """An RS256 OIDC provider and an ES256 custom-JWT provider (JWKS by URL)."""
    with JwtIssuer("RS256", "rs-app") as rs, JwtIssuer("ES256", "es-app") as es:
        yield rs, es


@pytest.fixture(scope="module")
def store(
    tmp_path_factory: pytest.TempPathFactory, issuers: tuple[JwtIssuer, JwtIssuer]
) -> Iterator[StoreProcess]:
    rs, es = issuers
    tmp = tmp_path_factory.mktemp("auth")
    config = tmp / "auth.config.json"
    config.write_text(json.dumps({"providers": [rs.oidc_provider(), es.custom_jwt_provider()]}))
    with StoreProcess(
        tmp / "store.sqlite",
        functions="auth_functions",
        pythonpath=[Path(__file__).parent],
        extra=["--auth-config", str(config)],
        env={"MARKETPULSE_AUTH_JWKS_MIN_REFRESH_S": "0.2"},
    ) as proc:
        yield proc


def expired(issuer: JwtIssuer, subject: str) -> str:
    return issuer.token(subject, now=time.time() - 7200)


def signed_in(js: JsDriver, *tokens: str) -> None:
    js.send(cmd="setAuth", tokens=list(tokens))
    js.wait_for(lambda e: e["event"] == "authChange" and e["isAuthenticated"] is True)


def subscribed(js: JsDriver, sub: str, path: str) -> Any:
    js.send(cmd="subscribe", id=sub, path=path, args={})
    return js.wait_for(lambda e: e.get("id") == sub and e["event"] in ("update", "error"))


@needs_node
@pytest.mark.parametrize("which", ["RS256 OIDC", "ES256 customJwt"])
def test_js_user_with_an_expired_token_refreshes_it_and_sees_its_identity(
    store: StoreProcess, issuers: tuple[JwtIssuer, JwtIssuer], which: str
) -> None:
    issuer = issuers[0] if which.startswith("RS") else issuers[1]
    js = JsDriver(store.url)
    try:
        fresh = issuer.token("alice", name="Alice", email="alice@example.com", desk="rates")
        signed_in(js, expired(issuer, "alice"), fresh)
        # The cached token was refused with AuthError; the client asked for a fresh one.
        first = js.wait_for(lambda e: e["event"] == "fetchToken" and e["n"] == 1)
        again = js.wait_for(lambda e: e["event"] == "fetchToken" and e["n"] == 2)
        assert first["forceRefreshToken"] is False and again["forceRefreshToken"] is True
        assert again["token"] == fresh
        me = subscribed(js, "me", "whoami:me")["value"]
        assert me == {
            "tokenIdentifier": f"{issuer.url}|alice",
            "subject": "alice",
            "issuer": issuer.url,
            "name": "Alice",
            "email": "alice@example.com",
            "desk": "rates",
        }
        assert js.call("query", "ws", "whoami:subject", {}, "q")["value"] == "alice"
        assert js.call("mutation", "ws", "whoami:visit", {}, "m")["value"] == 1
        assert js.call("action", "ws", "whoami:meFromAction", {}, "a")["value"] == me
        # Over HTTP, a Bearer token.
        js.send(cmd="setHttpAuth", token=fresh)
        assert js.call("query", "http", "whoami:subject", {}, "h")["value"] == "alice"
        assert js.call("mutation", "http", "whoami:visit", {}, "hm")["value"] == 2
    finally:
        js.close()


@needs_node
def test_js_without_a_token_gets_a_clear_error_from_user_functions(store: StoreProcess) -> None:
    js = JsDriver(store.url)
    try:
        assert subscribed(js, "me", "whoami:me")["value"] is None
        for cmd, path in [
            ("query", "whoami:subject"),
            ("mutation", "whoami:visit"),
            ("action", "whoami:meFromAction"),
        ]:
            for via in ("ws", "http"):
                r = js.call(cmd, via, path, {}, f"{cmd}-{via}")
                assert r["event"] == "failed", r
                assert r["data"] == {"code": "Unauthenticated", "message": "Sign in first"}
    finally:
        js.close()


@needs_node
def test_js_two_users_never_see_each_other_through_a_shared_query(
    store: StoreProcess, issuers: tuple[JwtIssuer, JwtIssuer]
) -> None:
    rs, _ = issuers
    drivers = {"ann": JsDriver(store.url), "ben": JsDriver(store.url), "ann2": JsDriver(store.url)}
    try:
        signed_in(drivers["ann"], rs.token("ann"))
        signed_in(drivers["ben"], rs.token("ben"))
        signed_in(drivers["ann2"], rs.token("ann"))
        for name, js in drivers.items():
            assert subscribed(js, "me", "whoami:me")["value"]["subject"] == name[:3]
        for name, js in drivers.items():
            js.call("mutation", "ws", "whoami:visit", {}, "v")
            counts = [e["value"] for e in js.backlog if e.get("id") == "me"]
            assert all(c["subject"] == name[:3] for c in counts)
        assert subscribed(drivers["ben"], "n", "whoami:myVisits")["value"] == 1
        # ann visited from two sockets: her count is hers alone, shared by her two sockets.
        assert subscribed(drivers["ann"], "n", "whoami:myVisits")["value"] == 2
    finally:
        for js in drivers.values():
            js.close()


def _forged_tokens(rs: JwtIssuer) -> dict[str, tuple[str, str]]:
    """Each forged token, by case, with the reason the store gives."""
    claims = {"iss": rs.url, "sub": "mallory", "aud": rs.application_id}
    claims["exp"] = int(time.time()) + 3600
    claims["iat"] = int(time.time())
    forged = SigningKey.generate("RS256", kid=rs.key.kid)
    unpublished = SigningKey.generate("RS256", kid="never-published")
    return {
        "wrong audience": (rs.token("mallory", aud="someone-else"), "audience"),
        "wrong issuer": (rs.token("mallory", iss="http://127.0.0.1:9/"), "No auth provider"),
        "bad signature": (rs.token("mallory", key=forged), "signature is invalid"),
        "unknown kid": (rs.token("mallory", key=unpublished), "no signing key"),
        "alg none": (jwt.encode(claims, None, algorithm="none"), "'none'"),
        "alg HS256": (
            jwt.encode(claims, "s" * 32, algorithm="HS256", headers={"kid": rs.key.kid}),
            "'HS256'",
        ),
    }


@needs_node
def test_js_forged_tokens_are_refused_and_the_client_signs_out(
    store: StoreProcess, issuers: tuple[JwtIssuer, JwtIssuer]
) -> None:
    rs, _ = issuers
    for case, (token, reason) in _forged_tokens(rs).items():
        before = rs.jwks_requests
        js = JsDriver(store.url)
        try:
            js.send(cmd="setAuth", tokens=[token])
            event = js.wait_for(lambda e: e["event"] == "authChange")
            assert event["isAuthenticated"] is False, case
            # The client carries on signed out: user functions refuse it.
            assert subscribed(js, "me", "whoami:me")["value"] is None, case
            js.send(cmd="setHttpAuth", token=token)
            r = js.call("query", "http", "whoami:me", {}, "h")
            assert r["event"] == "failed" and "Unauthenticated" in r["message"], (case, r)
            assert reason in r["message"], (case, r)
        finally:
            js.close()
        if case == "unknown kid":
            assert rs.jwks_requests > before, "an unknown kid refreshes the JWKS before refusing"


@needs_node
def test_js_a_rotated_key_is_picked_up(
    store: StoreProcess, issuers: tuple[JwtIssuer, JwtIssuer]
) -> None:
    rs, _ = issuers
    new_key = SigningKey.generate("ES256")
    rs.published.append(new_key)
    js = JsDriver(store.url)
    try:
        signed_in(js, rs.token("rotated", key=new_key))
        assert subscribed(js, "me", "whoami:me")["value"]["subject"] == "rotated"
    finally:
        js.close()
        rs.published.remove(new_key)


def test_pypi_client_set_auth(store: StoreProcess, issuers: tuple[JwtIssuer, JwtIssuer]) -> None:
    rs, es = issuers
    anonymous = ConvexClient(store.url)
    with pytest.raises(ConvexError) as info:
        anonymous.query("whoami:subject")
    assert info.value.data == {"code": "Unauthenticated", "message": "Sign in first"}
    client = ConvexClient(store.url)
    client.set_auth(es.token("pia", name="Pia"))
    me = client.query("whoami:me")
    assert me["tokenIdentifier"] == f"{es.url}|pia" and me["name"] == "Pia"
    assert client.mutation("whoami:visit") == 1
    assert client.action("whoami:meFromAction")["subject"] == "pia"
    assert anonymous.query("whoami:me") is None
    http = ConvexHttpClient(store.url)
    http.set_auth(rs.token("hal"))
    assert http.query("whoami:subject") == "hal"
    http.set_auth(rs.token("hal", aud="nope"))
    with pytest.raises(Exception, match="audience"):
        http.query("whoami:subject")


def test_pypi_client_with_an_expired_token_works_once_it_sets_a_fresh_one(
    store: StoreProcess, issuers: tuple[JwtIssuer, JwtIssuer]
) -> None:
    rs, _ = issuers
    refusals = metric(store.url, "marketpulse_refused_total", reason="credentials")
    client = ConvexClient(store.url)
    client.set_auth(expired(rs, "pat"))
    subscription = client.subscribe("whoami:subject")
    # The Python client answers AuthError by reconnecting with the same token, and is refused
    # again (its calls wait meanwhile; from one thread, so nothing is iterated yet).
    deadline = time.monotonic() + 20
    while metric(store.url, "marketpulse_refused_total", reason="credentials") < refusals + 2:
        assert time.monotonic() < deadline, "the expired token was not refused"
        time.sleep(0.1)
    client.set_auth(rs.token("pat"))
    assert next(iter(subscription)) == "pat"
    subscription.unsubscribe()
