"""User tokens over the sync socket: a real store, a real issuer, the light wire client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.auth_functions import whoami
from marketpulse.reactive.auth import TokenVerifier
from marketpulse.reactive.auth._config import parse_auth_config
from marketpulse.reactive.limits import ConnectionLimits
from marketpulse.reactive.sync.client import LightSyncClient, ServerError
from marketpulse.testing import JwtIssuer

from .serving import Served, serve_store


@pytest.fixture
def issuer() -> Iterator[JwtIssuer]:
    with JwtIssuer("ES256") as it:
        yield it


@pytest.fixture
async def store(tmp_path: Path, issuer: JwtIssuer) -> AsyncIterator[Served]:
    config = parse_auth_config({"providers": [issuer.oidc_provider()]})
    async with serve_store(
        tmp_path / "s.sqlite", modules=[whoami], verifier=TokenVerifier(config, leeway_s=0)
    ) as served:
        yield served


async def auth_error(c: LightSyncClient) -> dict[str, Any]:
    for _ in range(500):
        if c.failure is not None:
            break
        await asyncio.sleep(0.01)
    assert isinstance(c.failure, ServerError) and "AuthError" in str(c.failure), c.failure
    message: dict[str, Any] = next(m for m in c.messages if m["type"] == "AuthError")
    return message


async def test_messages_after_a_token_wait_for_its_keys_and_run_as_the_user(
    store: Served, issuer: JwtIssuer
) -> None:
    c = await store.client()
    # The first token of the provider needs its keys: the subscription sent right after it
    # is held, then runs under the user's identity (never as anonymous).
    await c.authenticate("User", issuer.token("alice", name="Alice"))
    q = await c.subscribe("whoami:me")
    me = await c.wait_for(q)
    assert me["tokenIdentifier"] == f"{issuer.url}|alice" and me["name"] == "Alice"
    assert not [t for t in c.transitions if t.modifications and t.end["identity"] == 0]
    ok = await c.request("Mutation", "whoami:visit")
    assert ok["success"] and ok["result"] == 1.0
    # A refreshed token of the same user: accepted, same identity.
    await c.authenticate("User", issuer.token("alice", name="Alice"))
    q2 = await c.subscribe("whoami:myVisits")
    assert await c.wait_for(q2) == 1.0
    # Logging out: the user-only function now fails clearly.
    await c.authenticate("None")
    q3 = await c.subscribe("whoami:subject")
    with pytest.raises(ServerError, match="Sign in first"):
        await c.wait_for(q3)
    await c.close()


async def test_what_a_socket_sends_while_its_keys_are_fetched_is_bounded_in_bytes(
    tmp_path: Path, issuer: JwtIssuer
) -> None:
    # A provider whose keys never come (a listener that never answers): every message after
    # the token is held until they do.
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    provider = {**issuer.custom_jwt_provider(), "jwks": f"http://127.0.0.1:{port}/jwks"}
    limits = ConnectionLimits(max_message_bytes=64 * 1024)
    verifier = TokenVerifier(parse_auth_config({"providers": [provider]}))
    try:
        async with serve_store(
            tmp_path / "h.sqlite", limits, modules=[whoami], verifier=verifier
        ) as served:
            c = await served.client()
            await c.authenticate("User", issuer.token("mallory"))
            for rid in range(3):  # each under the message limit, together over it
                await c.send_raw(
                    f'{{"type":"Mutation","requestId":{rid},"udfPath":"whoami:visit",'
                    f'"args":[{{"pad":"{"x" * 40_000}"}}]}}'
                )
            for _ in range(300):
                if c.failure is not None:
                    break
                await asyncio.sleep(0.01)
            assert "Too many messages while the token" in str(c.failure)
            await c.close()
    finally:
        silent.close()


async def test_two_users_never_see_each_other_through_a_shared_query(
    store: Served, issuer: JwtIssuer
) -> None:
    clients = {}
    for name in ("ann", "ben", "ann"):
        c = await store.client()
        await c.authenticate("User", issuer.token(name))
        clients.setdefault(name, []).append((c, await c.subscribe("whoami:me")))
    for name, subs in clients.items():
        for c, q in subs:
            assert (await c.wait_for(q))["subject"] == name
    # The two sockets of ann share one query run; ben's is another (the key has the identity).
    shared = [key for key in store.engine._queries if key[0] == "whoami:me"]
    assert len(shared) == 2 and len({key[2] for key in shared}) == 2
    for subs in clients.values():
        for c, _ in subs:
            await c.close()


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({"now": time.time() - 7200}, "Token expired"),
        ({"aud": "other"}, "audience"),
        ({"iss": "http://127.0.0.1:9"}, "No auth provider"),
    ],
)
async def test_refused_user_tokens_get_auth_error_with_their_base_version(
    store: Served, issuer: JwtIssuer, claims: dict[str, Any], error: str
) -> None:
    c = await store.client()
    await c.authenticate("User", issuer.token("a", **claims))
    message = await auth_error(c)
    assert error in message["error"]
    assert message["baseVersion"] == 0 and message["authUpdateAttempted"] is True
    await c.close()


async def test_a_token_that_expires_mid_session_ends_it(store: Served, issuer: JwtIssuer) -> None:
    c = await store.client()
    await c.authenticate("User", issuer.token("short", lifetime_s=2))
    q = await c.subscribe("whoami:subject")
    assert await c.wait_for(q) == "short"
    started = time.monotonic()
    message = await auth_error(c)
    assert message["authUpdateAttempted"] is False and message["baseVersion"] == 1
    assert "expired" in message["error"] and time.monotonic() - started < 4


class NoAlgIssuer(JwtIssuer):
    """Publishes its keys without ``alg`` (allowed by RFC 7517; Microsoft's JWKS does)."""

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [{k: v for k, v in key.items() if k != "alg"} for key in super().jwks()["keys"]]
        }


async def test_a_socket_whose_token_waits_for_keys_pyjwt_must_try_twice_is_answered(
    tmp_path: Path,
) -> None:
    # An ES256 key without "alg" is tried as RS256 first, which PyJWT refuses: the fetch must
    # still finish, and the messages held behind the token run.
    with NoAlgIssuer("ES256") as issuer:
        verifier = TokenVerifier(parse_auth_config({"providers": [issuer.oidc_provider()]}))
        async with serve_store(
            tmp_path / "n.sqlite", modules=[whoami], verifier=verifier
        ) as served:
            c = await served.client()
            await c.authenticate("User", issuer.token("alice"))
            q = await c.subscribe("whoami:me")
            assert (await c.wait_for(q, timeout=5.0))["subject"] == "alice"
            await c.close()


async def test_a_token_of_an_unknown_key_is_refused_by_name_after_its_fetch(
    tmp_path: Path, issuer: JwtIssuer
) -> None:
    from marketpulse.reactive.auth import SigningKey

    config = parse_auth_config({"providers": [issuer.oidc_provider()]})
    verifier = TokenVerifier(config, min_refresh_s=0)  # refreshes back to back
    async with serve_store(tmp_path / "k.sqlite", modules=[whoami], verifier=verifier) as served:
        c = await served.client()
        await c.authenticate("User", issuer.token("m", key=SigningKey.generate("ES256")))
        message = await auth_error(c)
        assert "no signing key with kid" in message["error"], message
        await c.close()


async def test_a_flood_of_refused_credentials_is_counted_but_barely_logged(
    store: Served, issuer: JwtIssuer
) -> None:
    """Anyone can send bad tokens and keys: each one a log line would fill the disk at the
    request rate (operations.md: refusal lines are rate-limited, the count is a metric)."""
    import httpx
    from structlog.testing import capture_logs

    from scrape import sample

    bad = issuer.token("x", aud="other-app")
    body = {"path": "whoami:me", "args": {}}
    with capture_logs() as logs:
        async with httpx.AsyncClient(base_url=store.url) as http:
            for i in range(60):
                auth = f"Bearer {bad}" if i % 2 else "Convex not-the-key"
                r = await http.post("/api/query", json=body, headers={"authorization": auth})
                assert r.status_code == 401
            c = await store.client()
            await c.authenticate("User", bad)
            await auth_error(c)
            await c.close()
            text = (await http.get("/metrics")).text
    lines = [e for e in logs if e["event"] == "user token refused"]
    assert len(lines) <= 5, lines  # the throttle is the process's: earlier tests count too
    assert sample(text, "marketpulse_refused_total", reason="credentials") == 61


async def test_a_signed_claim_beyond_64_bits_reaches_the_function_as_a_float(
    store: Served, issuer: JwtIssuer
) -> None:
    """It made the identity's cache key unencodable: the socket died without a close frame
    (and an HTTP call answered 500)."""
    import httpx

    token = issuer.token("big", account=2**70)
    c = await store.client()
    await c.authenticate("User", token)
    q = await c.subscribe("whoami:me")
    assert (await c.wait_for(q, timeout=5.0))["account"] == float(2**70)
    await c.close()
    async with httpx.AsyncClient(base_url=store.url) as http:
        r = await http.post(
            "/api/query",
            json={"path": "whoami:me", "args": {}, "format": "json"},
            headers={"authorization": f"Bearer {token}"},
        )
    assert r.status_code == 200 and r.json()["value"]["account"] == float(2**70)
