"""The market-data app's signed-in features through the official clients: npm ``convex``
(``setAuth``) and PyPI ``convex`` (``set_auth``), against a real ``marketpulse serve`` serving the
default app and trusting an issuer the test runs (``JwtIssuer``). Watchlists, alerts and settings
are each user's own: another user's data is out of reach through every public function."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from convex import ConvexClient, ConvexError

from marketpulse.testing import AdminClient, JwtIssuer, StoreProcess, WebhookReceiver
from scrape import metric

from .js_driver import JsDriver, node_available

pytestmark = pytest.mark.e2e

needs_node = pytest.mark.skipif(
    not node_available(), reason="node and tests/js/node_modules are needed (npm ci in tests/js)"
)

TICKERS = ("FED-1", "CPI-1", "GDP-1")
UNAUTH = {"code": "Unauthenticated", "message": "Sign in first"}


@pytest.fixture(scope="module")
def issuer() -> Iterator[JwtIssuer]:
    with JwtIssuer("ES256", "markets-app") as iss:
        yield iss


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, issuer: JwtIssuer) -> Iterator[StoreProcess]:
    tmp = tmp_path_factory.mktemp("apps")
    config = tmp / "auth.config.json"
    config.write_text(json.dumps({"providers": [issuer.custom_jwt_provider()]}))
    with StoreProcess(tmp / "store.sqlite", extra=["--auth-config", str(config)]) as proc:
        admin = AdminClient(proc.url, proc.admin_key)
        admin.mutation(
            "marketData:upsertMarkets",
            {"markets": [{"ticker": t, "title": t, "status": "active"} for t in TICKERS]},
        )
        set_prices(proc, {"FED-1": 0.5, "CPI-1": 0.3, "GDP-1": 0.7})
        yield proc


_ts = [1_700_000_000_000.0]


def set_prices(store: StoreProcess, prices: dict[str, float]) -> None:
    _ts[0] += 1000
    AdminClient(store.url, store.admin_key).mutation(
        "marketData:applyUpdates",
        {"batch": {"prices": [{"ticker": t, "price": p, "ts": _ts[0]} for t, p in prices.items()]}},
    )


def signed_in(js: JsDriver, *tokens: str) -> None:
    js.send(cmd="setAuth", tokens=list(tokens))
    js.wait_for(lambda e: e["event"] == "authChange" and e["isAuthenticated"] is True)


def value(js: JsDriver, cmd: str, path: str, args: dict[str, Any], rid: str) -> Any:
    r = js.call(cmd, "ws", path, args, rid)
    assert r["event"] == "result", r
    return r["value"]


@needs_node
def test_js_a_signed_in_user_gets_their_own_watchlist_after_refreshing_an_expired_token(
    store: StoreProcess, issuer: JwtIssuer
) -> None:
    js = JsDriver(store.url)
    try:
        expired = issuer.token("jo", now=time.time() - 7200)
        signed_in(js, expired, issuer.token("jo", name="Jo"))
        # The expired token got AuthError; the client fetched a fresh one and went on.
        again = js.wait_for(lambda e: e["event"] == "fetchToken" and e["n"] == 2)
        assert again["forceRefreshToken"] is True
        js.send(cmd="subscribe", id="w", path="watchlists:list", args={})
        assert js.wait_for(lambda e: e.get("id") == "w")["value"] == []
        assert value(js, "mutation", "watchlists:add", {"ticker": "FED-1"}, "a1") is True
        assert js.wait_for(lambda e: e.get("id") == "w")["value"] == ["FED-1"]
        assert value(js, "mutation", "watchlists:add", {"ticker": "CPI-1"}, "a2") is True
        assert js.wait_for(lambda e: e.get("id") == "w")["value"] == ["CPI-1", "FED-1"]
        assert value(js, "mutation", "watchlists:remove", {"ticker": "FED-1"}, "r1") is True
        assert js.wait_for(lambda e: e.get("id") == "w")["value"] == ["CPI-1"]
        # Over HTTP with a Bearer token: the same user's list.
        js.send(cmd="setHttpAuth", token=issuer.token("jo"))
        r = js.call("query", "http", "watchlists:list", {}, "h")
        assert r["value"] == ["CPI-1"]
    finally:
        js.close()


@needs_node
def test_js_without_a_token_user_functions_give_a_clear_error(store: StoreProcess) -> None:
    js = JsDriver(store.url)
    try:
        for cmd, path, args in [
            ("query", "watchlists:list", {}),
            ("mutation", "watchlists:add", {"ticker": "FED-1"}),
            ("mutation", "watchlists:remove", {"ticker": "FED-1"}),
            ("mutation", "alerts:create", {"ticker": "FED-1", "above": 0.9}),
            ("query", "alerts:list", {}),
            ("mutation", "alerts:remove", {"id": "x"}),
            ("query", "settings:get", {}),
            ("mutation", "settings:setAlertWebhook", {"url": None}),
        ]:
            for via in ("ws", "http"):
                r = js.call(cmd, via, path, args, f"{path}-{via}")
                assert r["event"] == "failed", r
                assert r["data"] == UNAUTH, r
        # Public market data needs no sign-in, the trade history included.
        page = value(
            js,
            "query",
            "marketData:getTradeHistory",
            {"ticker": "FED-1", "paginationOpts": {"numItems": 5, "cursor": None}},
            "th",
        )
        assert page["page"] == [] and page["isDone"] is True
    finally:
        js.close()


@needs_node
def test_js_a_wrong_audience_or_issuer_is_refused(store: StoreProcess, issuer: JwtIssuer) -> None:
    for claims in ({"aud": "another-app"}, {"iss": "http://127.0.0.1:9/"}):
        js = JsDriver(store.url)
        try:
            js.send(cmd="setAuth", tokens=[issuer.token("eve", **claims)])
            assert js.wait_for(lambda e: e["event"] == "authChange")["isAuthenticated"] is False
            r = js.call("query", "ws", "watchlists:list", {}, "l")
            assert r["event"] == "failed" and r["data"] == UNAUTH, r
        finally:
            js.close()


def _snapshot(client: ConvexClient) -> dict[str, Any]:
    return {
        "watchlist": client.query("watchlists:list"),
        "alerts": client.query("alerts:list"),
        "settings": client.query("settings:get"),
    }


def test_pypi_user_a_cannot_reach_user_b_through_any_public_function(
    store: StoreProcess, issuer: JwtIssuer
) -> None:
    a, b = ConvexClient(store.url), ConvexClient(store.url)
    a.set_auth(issuer.token("a-user"))
    b.set_auth(issuer.token("b-user"))
    b.mutation("watchlists:add", {"ticker": "GDP-1"})
    b_alert = b.mutation("alerts:create", {"ticker": "GDP-1", "above": 0.95})
    b.mutation("settings:setAlertWebhook", {"url": "http://127.0.0.1:9/b-secret-hook"})
    before = _snapshot(b)
    assert before["watchlist"] == ["GDP-1"] and before["alerts"][0]["id"] == b_alert

    # A, through every public user function, aiming at B's data.
    assert _snapshot(a) == {"watchlist": [], "alerts": [], "settings": {"alertWebhook": None}}
    assert a.mutation("watchlists:remove", {"ticker": "GDP-1"}) is False
    assert a.mutation("watchlists:add", {"ticker": "GDP-1"}) is True  # A's own entry
    assert a.mutation("watchlists:remove", {"ticker": "GDP-1"}) is True  # ...removed again
    with pytest.raises(ConvexError) as info:
        a.mutation("alerts:remove", {"id": b_alert})
    assert info.value.data == {"code": "NotFound", "message": "Alert not found"}
    a_alert = a.mutation("alerts:create", {"ticker": "GDP-1", "above": 0.95})
    a.mutation("settings:setAlertWebhook", {"url": "http://127.0.0.1:9/a-hook"})
    assert [x["id"] for x in a.query("alerts:list")] == [a_alert]
    a.mutation("alerts:remove", {"id": a_alert})
    # B cannot remove A's (gone) alert either, and B's data is as it was.
    with pytest.raises(ConvexError):
        b.mutation("alerts:remove", {"id": a_alert})
    assert _snapshot(b) == before
    assert _snapshot(a)["settings"] == {"alertWebhook": "http://127.0.0.1:9/a-hook"}


def test_pypi_anonymous_and_expired_tokens(store: StoreProcess, issuer: JwtIssuer) -> None:
    anonymous = ConvexClient(store.url)
    with pytest.raises(ConvexError) as info:
        anonymous.query("watchlists:list")
    assert info.value.data == UNAUTH
    refusals = metric(store.url, "marketpulse_refused_total", reason="credentials")
    client = ConvexClient(store.url)
    client.set_auth(issuer.token("pat", now=time.time() - 7200))
    subscription = client.subscribe("watchlists:list")
    deadline = time.monotonic() + 20
    while metric(store.url, "marketpulse_refused_total", reason="credentials") < refusals + 1:
        assert time.monotonic() < deadline, "the expired token was not refused"
        time.sleep(0.1)
    client.set_auth(issuer.token("pat"))
    assert next(iter(subscription)) == []
    subscription.unsubscribe()
    client.mutation("watchlists:add", {"ticker": "CPI-1"})
    assert client.query("watchlists:list") == ["CPI-1"]


@needs_node
def test_js_an_alert_fires_live_and_reaches_the_webhook(
    store: StoreProcess, issuer: JwtIssuer
) -> None:
    js = JsDriver(store.url)
    try:
        with WebhookReceiver(fail_first=1) as hook:
            signed_in(js, issuer.token("al"))
            value(js, "mutation", "settings:setAlertWebhook", {"url": hook.url}, "s")
            js.send(cmd="subscribe", id="alerts", path="alerts:list", args={})
            assert js.wait_for(lambda e: e.get("id") == "alerts")["value"] == []
            alert = value(js, "mutation", "alerts:create", {"ticker": "CPI-1", "below": 0.2}, "c")
            armed = js.wait_for(lambda e: e.get("id") == "alerts")["value"]
            assert [(x["id"], x["triggeredAt"]) for x in armed] == [(alert, None)]
            set_prices(store, {"CPI-1": 0.25})  # not yet
            set_prices(store, {"CPI-1": 0.19})
            fired = js.wait_for(
                lambda e: e.get("id") == "alerts" and e["value"][0]["triggeredAt"] is not None
            )["value"][0]
            assert fired["triggerPrice"] == 0.19
            assert fired["delivery"]["state"] in ("pending", "retrying", "delivered")
            body = hook.wait_for(1)[0]  # the first POST failed; the retry got through
            assert (body["id"], body["ticker"], body["triggerPrice"]) == (alert, "CPI-1", 0.19)
            delivered = js.wait_for(
                lambda e: (
                    e.get("id") == "alerts" and e["value"][0]["delivery"]["state"] == "delivered"
                )
            )["value"][0]
            assert delivered["delivery"]["attempts"] == 2
    finally:
        js.close()


def test_pypi_a_delivered_alert_leaves_its_webhook_url_out_of_the_store_log(
    store: StoreProcess, issuer: JwtIssuer
) -> None:
    # A webhook URL is often its own credential (Slack's, Discord's): only its user sees it.
    client = ConvexClient(store.url)
    client.set_auth(issuer.token("hooked"))
    with WebhookReceiver() as hook:
        client.mutation("settings:setAlertWebhook", {"url": hook.url + "?token=HOOKSECRET42"})
        client.mutation("alerts:create", {"ticker": "FED-1", "below": 0.1})
        set_prices(store, {"FED-1": 0.05})
        assert hook.wait_for(1)[0]["ticker"] == "FED-1"
        deadline = time.monotonic() + 10
        while client.query("alerts:list")[0]["delivery"]["state"] != "delivered":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert "HOOKSECRET42" not in store.log()
