"""The development identity provider served by ``marketpulse serve --dev-auth-key``: sign in by
choosing a name, through its endpoints, its page and the official npm client."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import jwt
import pytest

from marketpulse.testing import JwtIssuer, StoreProcess

from .js_driver import JsDriver, node_available

pytestmark = pytest.mark.e2e

FUNCTIONS = Path(__file__).parent


def dev_store(tmp: Path, *extra: str) -> StoreProcess:
    return StoreProcess(
        tmp / "store.sqlite",
        functions="auth_functions",
        pythonpath=[FUNCTIONS],
        extra=["--dev-auth-key", str(tmp / "dev_auth_key.pem"), *extra],
    )


@pytest.mark.skipif(not node_available(), reason="node and tests/js/node_modules are needed")
def test_dev_sign_in_gives_tokens_the_store_and_the_npm_client_accept(tmp_path: Path) -> None:
    store = dev_store(tmp_path)
    with store:
        key_file = tmp_path / "dev_auth_key.pem"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        config = httpx.get(f"{store.url}/auth/dev/config", timeout=10).json()
        assert config["issuer"] == f"{store.url}/auth/dev"
        assert config["applicationID"] == "marketpulse-dev"
        discovery = httpx.get(
            f"{store.url}/auth/dev/.well-known/openid-configuration", timeout=10
        ).json()
        assert discovery["issuer"] == config["issuer"]
        jwks = httpx.get(discovery["jwks_uri"], timeout=10).json()
        # The published key verifies the issued token (what any other consumer would do).
        signed = httpx.post(config["tokenUrl"], json={"name": "  Dana  Scully "}, timeout=10)
        token = signed.json()["token"]
        key = jwt.PyJWK(jwks["keys"][0])
        claims = jwt.decode(token, key.key, algorithms=["ES256"], audience="marketpulse-dev")
        assert claims["sub"] == "Dana Scully" and claims["iss"] == config["issuer"]
        bad = httpx.post(config["tokenUrl"], json={"name": ""}, timeout=10)
        assert bad.status_code == 400 and "name" in bad.json()["message"]

        js = JsDriver(store.url)
        try:
            js.send(cmd="setAuth", tokens=[token])
            js.wait_for(lambda e: e["event"] == "authChange" and e["isAuthenticated"] is True)
            js.send(cmd="subscribe", id="me", path="whoami:me", args={})
            me = js.wait_for(lambda e: e.get("id") == "me")["value"]
            assert me["tokenIdentifier"] == f"{config['issuer']}|Dana Scully"
            assert me["name"] == "Dana Scully" and me["preferredUsername"] == "Dana Scully"
        finally:
            js.close()

        # The page: choose a name, get sent back (same origin only) with the token.
        page = httpx.get(f"{store.url}/auth/dev/sign-in?redirect=/app", timeout=10)
        assert page.status_code == 200 and "<form" in page.text
        back = httpx.post(
            f"{store.url}/auth/dev/sign-in?redirect=/app", data={"name": "Fox"}, timeout=10
        )
        assert back.status_code == 303
        location = urlsplit(back.headers["location"])
        assert location.path == "/app" and location.fragment.startswith("token=")
        page_token = location.fragment.removeprefix("token=")
        assert bearer_subject(store, page_token) == "Fox"
        elsewhere = httpx.post(
            f"{store.url}/auth/dev/sign-in?redirect=//evil.example/x",
            data={"name": "Fox"},
            timeout=10,
        )
        assert elsewhere.status_code == 200 and "evil" not in elsewhere.text
    # Restarted: the same key, so earlier tokens still sign in.
    with store:
        assert bearer_subject(store, token) == "Dana Scully"


def bearer_subject(store: StoreProcess, token: str) -> object:
    response = httpx.post(
        f"{store.url}/api/query",
        json={"path": "whoami:subject", "args": {}, "format": "json"},
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )
    body = response.json()
    return body.get("value", body)


def test_a_real_provider_turns_the_dev_sign_in_off(tmp_path: Path) -> None:
    with JwtIssuer() as issuer:
        config = tmp_path / "auth.config.json"
        config.write_text(json.dumps({"providers": [issuer.oidc_provider()]}))
        with dev_store(tmp_path, "--auth-config", str(config)) as store:
            # No dev endpoints (the path falls through to the dashboard's pages, if any).
            minted = httpx.post(f"{store.url}/auth/dev/token", json={"name": "x"}, timeout=10)
            assert minted.status_code in (404, 405)
            config_page = httpx.get(f"{store.url}/auth/dev/config", timeout=10)
            assert "json" not in config_page.headers.get("content-type", "")
            assert "the dev sign-in is off" in store.log()
            assert bearer_subject(store, issuer.token("real")) == "real"


def test_nodes_behind_a_balancer_accept_each_other_s_dev_tokens(tmp_path: Path) -> None:
    # As `marketpulse dev --store-nodes N` runs them: one key file, the balancer's URL as the
    # issuer's base. Each node issued tokens under its own address before, which the others
    # refused ("No auth provider found matching the given token"): half the calls failed.
    from marketpulse._balancer import BalancerProcess
    from marketpulse.testing import free_port

    port = free_port()
    shared = ["--dev-auth-key", str(tmp_path / "dev_auth_key.pem")]
    nodes = [
        StoreProcess(
            tmp_path / f"{name}.sqlite",
            functions="auth_functions",
            pythonpath=[FUNCTIONS],
            extra=[*shared, "--dev-auth-url", f"http://127.0.0.1:{port}"],
        )
        for name in ("n1", "n2")
    ]
    try:
        for node in nodes:
            node.start()
        named = [(f"n{i}", node.port) for i, node in enumerate(nodes, 1)]
        with BalancerProcess(named, tmp_path / "balancer", port=port) as balancer:
            issued = httpx.post(f"{balancer.url}/auth/dev/token", json={"name": "ada"}, timeout=10)
            assert issued.json()["issuer"] == f"{balancer.url}/auth/dev"
            for node in nodes:  # whichever node a call lands on
                assert bearer_subject(node, issued.json()["token"]) == "ada"
    finally:
        for node in nodes:
            node.stop()
