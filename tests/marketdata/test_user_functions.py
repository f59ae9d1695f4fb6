"""The signed-in users' functions of the app on a real engine: watchlists, alerts (fired inside
``applyUpdates``, delivered to a webhook by the scheduler with retries), settings, and the
paginated trade history. Users are ``Identity.for_user`` as the auth layer builds them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from marketpulse.marketdata import _alerts, _webhook
from marketpulse.marketdata import functions as app
from marketpulse.marketdata.schemas import RESULT_SCHEMAS
from marketpulse.reactive.engine import Engine, Identity, SchedulerRunner
from marketpulse.reactive.persistence import open_persistence
from marketpulse.testing import WebhookReceiver

MODULES = [app.marketData, app.watchlists, app.alerts, app.settings]
T0 = 1_700_000_000_000.0


def user(name: str) -> Identity:
    issuer = "http://127.0.0.1:1/issuer"
    return Identity.for_user(
        {"tokenIdentifier": f"{issuer}|{name}", "subject": name, "issuer": issuer}
    )


ANN, BEN = user("ann"), user("ben")


class App:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def mutate(self, path: str, who: Identity, **args: Any) -> Any:
        r = await self.engine.run_mutation(path, args, who)
        assert r.success, r.error_message
        return r.value

    async def mutate_error(self, path: str, who: Identity, **args: Any) -> Any:
        r = await self.engine.run_mutation(path, args, who)
        assert not r.success, f"{path} should fail, got {r.value!r}"
        return r.error_data if r.error_data is not None else r.error_message

    def query(self, path: str, who: Identity, **args: Any) -> Any:
        r = self.engine.run_query(path, args, who)
        assert r.success, r.error_message
        if path in RESULT_SCHEMAS:
            jsonschema.Draft202012Validator(RESULT_SCHEMAS[path]).validate(r.value)
        return r.value

    def query_error(self, path: str, who: Identity, **args: Any) -> Any:
        r = self.engine.run_query(path, args, who)
        assert not r.success
        return r.error_data if r.error_data is not None else r.error_message

    async def prices(self, **prices: float) -> None:
        await self.mutate(
            "marketData:applyUpdates",
            Identity.admin(),
            batch={
                "prices": [
                    {"ticker": t.replace("_", "-"), "price": p, "ts": self._ts()}
                    for t, p in prices.items()
                ]
            },
        )

    _clock = T0

    def _ts(self) -> float:
        App._clock += 1000
        return App._clock


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[App]:
    engine = await Engine.open(open_persistence(f"sqlite:{tmp_path / 'store.db'}"), MODULES)
    a = App(engine)
    try:
        await a.mutate(
            "marketData:upsertMarkets",
            Identity.admin(),
            markets=[
                {"ticker": t, "title": t, "status": "active"} for t in ("FED-1", "CPI-1", "GDP-1")
            ],
        )
        await a.prices(FED_1=0.50, CPI_1=0.30, GDP_1=0.70)
        yield a
    finally:
        await engine.close()


UNAUTH = {"code": "Unauthenticated", "message": "Sign in first"}


async def test_every_user_function_refuses_anonymous_and_admin_callers(store: App) -> None:
    for who in (Identity.anonymous(), Identity.admin()):
        for path in ("watchlists:list", "watchlists:markets", "alerts:list", "settings:get"):
            assert store.query_error(path, who) == UNAUTH
        for path, args in [
            ("watchlists:add", {"ticker": "FED-1"}),
            ("watchlists:remove", {"ticker": "FED-1"}),
            ("alerts:create", {"ticker": "FED-1", "above": 0.9}),
            ("alerts:remove", {"id": "x"}),
            ("settings:setAlertWebhook", {"url": None}),
        ]:
            assert await store.mutate_error(path, who, **args) == UNAUTH


async def test_watchlists_are_per_user(store: App) -> None:
    assert await store.mutate("watchlists:add", ANN, ticker="FED-1") is True
    assert await store.mutate("watchlists:add", ANN, ticker="FED-1") is False
    assert await store.mutate("watchlists:add", ANN, ticker="CPI-1") is True
    assert await store.mutate("watchlists:add", BEN, ticker="GDP-1") is True
    assert store.query("watchlists:list", ANN) == ["CPI-1", "FED-1"]
    assert store.query("watchlists:list", BEN) == ["GDP-1"]
    # Ben removing Ann's ticker only touches Ben's (empty) entry.
    assert await store.mutate("watchlists:remove", BEN, ticker="FED-1") is False
    assert store.query("watchlists:list", ANN) == ["CPI-1", "FED-1"]
    assert await store.mutate("watchlists:remove", ANN, ticker="FED-1") is True
    assert store.query("watchlists:list", ANN) == ["CPI-1"]
    err = await store.mutate_error("watchlists:add", ANN, ticker="NOPE")
    assert err["code"] == "UnknownMarket"


async def test_watched_markets_are_listed_past_the_market_lists_limit(store: App) -> None:
    # The dashboard's "Watchlist only" list. It used to filter listMarkets' answer (its first
    # `limit` markets by ticker), so a watched market past them was never shown.
    await store.mutate(
        "marketData:upsertMarkets",
        Identity.admin(),
        markets=[{"ticker": f"ZZ-{i:03}", "title": f"Z {i}", "status": "active"} for i in range(8)],
    )
    first = store.query("marketData:listMarkets", ANN, limit=5, prices=False)
    assert "ZZ-007" not in {m["ticker"] for m in first}
    for t in ("ZZ-007", "CPI-1"):
        assert await store.mutate("watchlists:add", ANN, ticker=t) is True
    watched = store.query("watchlists:markets", ANN)
    assert [m["ticker"] for m in watched] == ["CPI-1", "ZZ-007"]
    listed = {m["ticker"]: m for m in store.query("marketData:listMarkets", ANN, prices=False)}
    assert watched[1] == listed["ZZ-007"]
    assert store.query("watchlists:markets", BEN) == []


async def test_alert_fires_once_when_the_committed_price_crosses_its_level(store: App) -> None:
    up = await store.mutate("alerts:create", ANN, ticker="FED-1", above=0.6)
    down = await store.mutate("alerts:create", ANN, ticker="FED-1", below=0.4)
    other = await store.mutate("alerts:create", ANN, ticker="CPI-1", above=0.35)
    await store.prices(FED_1=0.59, CPI_1=0.31)
    assert all(a["triggeredAt"] is None for a in store.query("alerts:list", ANN))
    await store.prices(FED_1=0.61)
    by_id = {a["id"]: a for a in store.query("alerts:list", ANN)}
    assert by_id[up]["triggerPrice"] == 0.61 and by_id[up]["triggeredAt"] is not None
    assert by_id[up]["delivery"]["state"] == "none"  # no webhook set
    assert by_id[down]["triggeredAt"] is None and by_id[other]["triggeredAt"] is None
    fired_at = by_id[up]["triggeredAt"]
    await store.prices(FED_1=0.39)
    by_id = {a["id"]: a for a in store.query("alerts:list", ANN)}
    assert by_id[down]["triggerPrice"] == 0.39
    await store.prices(FED_1=0.65)  # above again: a fired alert does not fire twice
    assert {a["id"]: a for a in store.query("alerts:list", ANN)}[up]["triggeredAt"] == fired_at
    # Newest first.
    assert [a["id"] for a in store.query("alerts:list", ANN)] == [other, down, up]


async def test_a_level_already_reached_or_nonsense_is_refused(store: App) -> None:
    for args in [
        {"above": 0.5},  # the price is 0.50
        {"below": 0.55},
        {},
        {"above": 0.4, "below": 0.6},
        {"above": float("inf")},
        # Past any price (55 meant as cents): such an alert could never fire.
        {"above": 55},
        {"above": 1.01},
        {"below": -0.1},
    ]:
        err = await store.mutate_error("alerts:create", ANN, ticker="FED-1", **args)
        assert err["code"] == "InvalidAlert", (args, err)
    err = await store.mutate_error("alerts:create", ANN, ticker="FED-1", above=55)
    assert err["message"] == "above must be a price in dollars, from 0 to 1 (got 55)"
    assert await store.mutate("alerts:create", ANN, ticker="FED-1", above=1)
    assert await store.mutate("alerts:create", ANN, ticker="FED-1", below=0)
    err = await store.mutate_error("alerts:create", ANN, ticker="NOPE", above=0.5)
    assert err["code"] == "UnknownMarket"


async def test_users_cannot_reach_each_others_alerts(store: App) -> None:
    bens = await store.mutate("alerts:create", BEN, ticker="GDP-1", above=0.8)
    assert store.query("alerts:list", ANN) == []
    for bad in (bens, "not-an-id", "0" * 32):
        err = await store.mutate_error("alerts:remove", ANN, id=bad)
        assert err == {"code": "NotFound", "message": "Alert not found"}
    assert [a["id"] for a in store.query("alerts:list", BEN)] == [bens]
    await store.mutate("alerts:remove", BEN, id=bens)
    assert store.query("alerts:list", BEN) == []


async def test_settings_are_per_user_and_checked(store: App) -> None:
    await store.mutate("settings:setAlertWebhook", ANN, url="http://127.0.0.1:9/hook")
    assert store.query("settings:get", ANN) == {"alertWebhook": "http://127.0.0.1:9/hook"}
    assert store.query("settings:get", BEN) == {"alertWebhook": None}
    for url in (
        "ftp://x/y",
        "not a url",
        "http:///nohost",
        "http://127.0.0.1:abc/hook",
        "http://127.0.0.1:99999/hook",
    ):
        err = await store.mutate_error("settings:setAlertWebhook", ANN, url=url)
        assert err["code"] == "InvalidWebhook"


async def test_only_changed_tickers_are_checked(store: App) -> None:
    await store.mutate("alerts:create", ANN, ticker="CPI-1", above=0.9)
    scanned: list[str] = []
    real = _alerts._band

    def spy(db: Any, ticker: str) -> Any:
        scanned.append(ticker)
        return real(db, ticker)

    _alerts._band = spy  # type: ignore[assignment]
    try:
        await store.prices(FED_1=0.52)
        await store.prices(FED_1=0.52)  # unchanged: no check at all
    finally:
        _alerts._band = real  # type: ignore[assignment]
    assert scanned == ["FED-1"]


async def test_the_band_follows_creates_fires_and_removes(store: App) -> None:
    async def armed() -> set[float]:
        return {a["above"] for a in store.query("alerts:list", ANN) if a["triggeredAt"] is None}

    first = await store.mutate("alerts:create", ANN, ticker="GDP-1", above=0.75)
    await store.mutate("alerts:create", ANN, ticker="GDP-1", above=0.8)
    await store.mutate("alerts:create", ANN, ticker="GDP-1", above=0.9)
    await store.mutate("alerts:remove", ANN, id=first)  # the tightest level goes
    await store.prices(GDP_1=0.76)
    assert await armed() == {0.8, 0.9}
    await store.prices(GDP_1=0.85)
    assert await armed() == {0.9}
    await store.prices(GDP_1=0.95)
    assert await armed() == set()


async def test_fired_alerts_are_delivered_with_retries(
    store: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_alerts, "_BACKOFF_BASE_S", 0.2)
    backoff_s = _alerts.backoff_s
    asked: list[float] = []  # the delay each retry was scheduled with

    def recorded_backoff(attempt: int) -> float:
        asked.append(backoff_s(attempt))
        return asked[-1]

    monkeypatch.setattr(_alerts, "backoff_s", recorded_backoff)
    runner = SchedulerRunner(store.engine)
    await runner.start()
    try:
        with WebhookReceiver(fail_first=2) as hook:
            await store.mutate("settings:setAlertWebhook", ANN, url=hook.url)
            alert = await store.mutate("alerts:create", ANN, ticker="FED-1", above=0.6)
            await store.prices(FED_1=0.62)
            body = (await asyncio.to_thread(hook.wait_for, 1))[0]
            assert body["type"] == "priceAlert" and body["id"] == alert
            assert body["ticker"] == "FED-1" and body["triggerPrice"] == 0.62
            assert [status for _, status, _ in hook.attempts] == [500, 500, 200]
            gaps = [b[0] - a[0] for a, b in zip(hook.attempts, hook.attempts[1:], strict=False)]
            # The backoff grows (0.2 s, then 0.4 s), and each retry waited at least its own.
            # Comparing the two gaps instead would time the host: each one also holds two
            # durable commits, and a stalled fsync (0.4 s on a loaded CI disk) in the first
            # alone would hide the doubling.
            assert asked == [0.2, 0.4]
            assert gaps[0] >= 0.2 - 0.005 and gaps[1] >= 0.4 - 0.005, gaps  # the clocks' few ms
        for _ in range(100):
            delivery = store.query("alerts:list", ANN)[0]["delivery"]
            if delivery["state"] == "delivered":
                break
            await asyncio.sleep(0.02)
        assert delivery["state"] == "delivered" and delivery["attempts"] == 3
    finally:
        await runner.stop()


async def test_an_unreachable_webhook_fails_after_bounded_retries_and_blocks_nothing(
    store: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_alerts, "_BACKOFF_BASE_S", 0.01)
    runner = SchedulerRunner(store.engine)
    await runner.start()
    try:
        with WebhookReceiver() as hook:
            dead = hook.url
        await store.mutate("settings:setAlertWebhook", ANN, url=dead)
        await store.mutate("alerts:create", ANN, ticker="FED-1", above=0.6)
        await store.prices(FED_1=0.62)
        await store.prices(CPI_1=0.33)  # the price path goes on meanwhile
        for _ in range(400):
            delivery = store.query("alerts:list", ANN)[0]["delivery"]
            if delivery["state"] == "failed":
                break
            await asyncio.sleep(0.02)
        assert delivery == {
            "state": "failed",
            "attempts": float(_alerts.MAX_ATTEMPTS),
            "error": "ConnectError",
            "deliveredAt": None,
        }
    finally:
        await runner.stop()


async def test_a_crowded_level_fires_in_bounded_transactions(
    store: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_alerts, "FIRE_LIMIT", 3)
    users = [user(f"u{i}") for i in range(7)]
    for u in users:
        await store.mutate("alerts:create", u, ticker="GDP-1", below=0.6)
    runner = SchedulerRunner(store.engine)
    await runner.start()
    try:
        await store.prices(GDP_1=0.55)
        fired = [u for u in users if store.query("alerts:list", u)[0]["triggeredAt"] is not None]
        assert len(fired) == 3
        for _ in range(200):
            if all(store.query("alerts:list", u)[0]["triggeredAt"] for u in users):
                break
            await asyncio.sleep(0.02)
        assert all(store.query("alerts:list", u)[0]["triggerPrice"] == 0.55 for u in users)
    finally:
        await runner.stop()


async def test_trade_history_pages_newest_first(store: App) -> None:
    trades = [
        {
            "id": f"t{i}",
            "ticker": "FED-1",
            "side": "buy",
            "price": 0.5,
            "size": 1,
            "timestamp": T0 + i,
        }
        for i in range(25)
    ]
    await store.mutate("marketData:applyUpdates", Identity.admin(), batch={"trades": trades})
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        page = store.query(
            "marketData:getTradeHistory",
            ANN,
            ticker="FED-1",
            paginationOpts={"numItems": 10.0, "cursor": cursor},
        )
        seen += [t["id"] for t in page["page"]]
        cursor = page["continueCursor"]
        if page["isDone"]:
            break
    assert seen == [f"t{i}" for i in reversed(range(25))]
    empty = store.query(
        "marketData:getTradeHistory",
        Identity.anonymous(),
        ticker="NOPE",
        paginationOpts={"numItems": 10, "cursor": None},
    )
    assert empty["page"] == [] and empty["isDone"] is True


# -- the operator's webhook allow-list ----------------------------------------------------------


def test_the_allow_list_parses_addresses_networks_names_and_domains() -> None:
    allow = _webhook.AllowList.parse("10.0.0.0/8, hooks.example.com ,*.corp.example,::1")
    assert allow.allows("https://10.2.3.4/x") and allow.allows("http://[::1]:8080/")
    assert allow.allows("https://hooks.example.com/a?token=s") and allow.allows(
        "http://a.corp.example/"
    )
    for refused in (
        "http://11.0.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://example.com/",
        "http://corp.example.evil.com/",
        "http://hooks.example.com.evil.com/",
        "http://localhost/",
        "http:///nohost",
    ):
        assert not allow.allows(refused), refused
    default = _webhook.AllowList.parse(_webhook.DEFAULT_ALLOW)
    assert default.allows("http://127.0.0.1:9/") and default.allows("http://localhost:1/")
    assert default.allows("http://127.9.9.9/") and not default.allows("http://192.168.1.1/")
    assert _webhook.AllowList.parse("*").allows("http://anything.example/")
    for bad in ("exa mple.com", "http://x", "-bad.com", "a_b.com"):
        with pytest.raises(ValueError, match="not a host or network"):
            _webhook.AllowList.parse(bad)


async def test_a_webhook_outside_the_allow_list_is_refused_when_set(
    store: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(_webhook.ALLOW_ENV, raising=False)  # the default: loopback only
    for url in ("http://10.0.0.5/hook", "http://169.254.169.254/", "https://hooks.example.com/"):
        err = await store.mutate_error("settings:setAlertWebhook", ANN, url=url)
        assert err["code"] == "WebhookNotAllowed", (url, err)
        assert _webhook.ALLOW_ENV in err["message"]
    assert store.query("settings:get", ANN) == {"alertWebhook": None}
    monkeypatch.setenv(_webhook.ALLOW_ENV, "hooks.example.com")
    await store.mutate("settings:setAlertWebhook", ANN, url="https://hooks.example.com/")
    err = await store.mutate_error("settings:setAlertWebhook", ANN, url="http://127.0.0.1:9/")
    assert err["code"] == "WebhookNotAllowed"  # loopback is only the default


async def _fire_one(store: App, ticker: str, above: float) -> dict[str, Any]:
    """Fire one alert (a price 0.01 past ``above``); its delivery after the first attempt."""
    alert = await store.mutate("alerts:create", ANN, ticker=ticker, above=above)
    await store.prices(**{ticker.replace("-", "_"): above + 0.01})
    for _ in range(400):
        mine = [a for a in store.query("alerts:list", ANN) if a["id"] == alert]
        delivery: dict[str, Any] | None = mine[0]["delivery"]
        if delivery is not None and delivery["attempts"] >= 1:
            return delivery
        await asyncio.sleep(0.02)
    raise AssertionError("no delivery attempt")


async def test_delivery_checks_the_allow_list_again_and_follows_no_redirect(
    store: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_alerts, "_BACKOFF_BASE_S", 60.0)  # one attempt within the test
    runner = SchedulerRunner(store.engine)
    await runner.start()
    try:
        with WebhookReceiver() as hook:
            # Allowed when set; the operator narrows the list before the alert fires.
            monkeypatch.setenv(_webhook.ALLOW_ENV, "127.0.0.1")
            await store.mutate("settings:setAlertWebhook", ANN, url=hook.url)
            monkeypatch.setenv(_webhook.ALLOW_ENV, "10.0.0.0/8")
            delivery = await _fire_one(store, "FED-1", 0.6)
            assert delivery["error"] == _webhook.NOT_ALLOWED
            assert hook.attempts == []
        with WebhookReceiver() as target:
            # An allowed host answers with a redirect to a host the list does not name
            # (``localhost``, though it is the same machine): the POST goes no further.
            bounced = target.url.replace("127.0.0.1", "localhost")
            with WebhookReceiver(redirect_to=bounced) as hook:
                monkeypatch.setenv(_webhook.ALLOW_ENV, "127.0.0.1")
                await store.mutate("settings:setAlertWebhook", ANN, url=hook.url)
                delivery = await _fire_one(store, "CPI-1", 0.35)
                assert delivery["error"] == "HTTP 307"
                assert [status for _, status, _ in hook.attempts] == [307]
            assert target.attempts == []
    finally:
        await runner.stop()
