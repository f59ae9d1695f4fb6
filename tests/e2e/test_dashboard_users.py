"""The dashboard's signed-in features in a real browser (Debian's Chromium, headless) against
``marketpulse dev`` (Temporal, store, simulator, worker): sign in with the dev issuer, star a
market while the store answers slowly (the star changes before the mutation's answer, and rolls
back when the store refuses), filter to the watchlist, create an alert that the simulator's
price then crosses and see it fire live, and load more trades."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from marketpulse.dashboard import static_dir
from marketpulse.testing import AdminClient, DevProcess

from .test_dashboard import _shot, browser  # noqa: F401 - the browser fixture

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

E2E = Path(__file__).resolve().parent
SLOW_S = 0.8  # under the store's 1 s mutation time limit
MARKETS = 3


# Recorded in the page on one clock (performance.now()): each MutationResponse as the socket
# receives it (before the Convex client handles it), and each change of a star's aria-pressed.
RECORDER = """
window.__responses = [];
window.__stars = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (e) => {
      try {
        const m = JSON.parse(e.data);
        if (m.type === "MutationResponse") window.__responses.push({t: performance.now(), success: m.success});
      } catch {}
    });
  }
};
new MutationObserver((changes) => {
  for (const c of changes) {
    const el = c.target;
    if (el.dataset && el.dataset.testid === "star") {
      window.__stars.push({t: performance.now(), ticker: el.dataset.ticker, pressed: el.getAttribute("aria-pressed")});
    }
  }
}).observe(document, {attributes: true, subtree: true, attributeFilter: ["aria-pressed"]});
"""


def _star_then_answer(page: Any, ticker: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Click ``ticker``'s star; wait for the mutation's answer and a moment after it.

    Returns the star's changes and the answer, timed in the page.
    """
    answered = page.evaluate("window.__responses.length")
    clicked = page.evaluate("performance.now()")
    page.click(f"[data-testid=star][data-ticker='{ticker}']")
    page.wait_for_function(f"window.__responses.length > {answered}", timeout=20_000)
    page.wait_for_timeout(300)
    stars = page.evaluate(
        f"window.__stars.filter(s => s.t >= {clicked} && s.ticker === '{ticker}')"
    )
    response = page.evaluate(f"window.__responses[{answered}]")
    assert response["t"] - clicked >= SLOW_S * 0.8, "the store was not slowed down"
    return stars, response


def test_signed_in_user_in_a_browser(tmp_path: Path, browser: Any) -> None:  # noqa: F811
    if static_dir() is None:
        pytest.fail("the dashboard is not built (src/marketpulse/dashboard/static)")
    fail_file = tmp_path / "refuse.txt"
    env = {
        "MARKETPULSE_FUNCTIONS": json.dumps(
            ["marketpulse.marketdata.functions", "slow_watchlists"]
        ),
        "SLOW_WATCHLISTS_S": str(SLOW_S),
        "SLOW_WATCHLISTS_FAIL_FILE": str(fail_file),
    }
    with DevProcess(
        tmp_path / "dev", sim_markets=MARKETS, sim_rate=150, env=env, pythonpath=[E2E]
    ) as dev:
        store = AdminClient(dev.url)
        assert store.query("slowdown:delay") == SLOW_S
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.add_init_script(RECORDER)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(dev.url + "/")
        page.wait_for_selector("[data-testid=connection][data-state=connected]", timeout=30_000)
        page.wait_for_function(
            f"document.querySelectorAll('[data-testid=market-row]').length === {MARKETS}",
            timeout=30_000,
        )
        tickers = page.eval_on_selector_all(
            "[data-testid=market-row]", "rows => rows.map(r => r.dataset.ticker)"
        )

        # Sign in with the dev issuer: the stars appear.
        assert page.locator("[data-testid=star]").count() == 0
        page.fill("[data-testid=sign-in-name]", "Ada")
        page.click("[data-testid=sign-in]")
        page.wait_for_selector("[data-testid=account-name]:has-text('Ada')", timeout=20_000)
        page.wait_for_function(
            f"document.querySelectorAll('[data-testid=star]').length === {MARKETS}",
            timeout=20_000,
        )

        # Star a market while the store takes SLOW_S to answer: the star flips first.
        first, second = tickers[0], tickers[1]
        stars, response = _star_then_answer(page, first)
        assert response["success"] is True
        assert [s["pressed"] for s in stars] == ["true"], stars
        assert stars[0]["t"] < response["t"], (stars, response)

        # A refused star flips, then rolls back once the refusal arrives.
        fail_file.write_text(second)
        stars, response = _star_then_answer(page, second)
        assert response["success"] is False
        assert [s["pressed"] for s in stars] == ["true", "false"], stars
        assert stars[0]["t"] < response["t"] <= stars[1]["t"], (stars, response)
        star = page.locator(f"[data-testid=star][data-ticker='{second}']")
        assert "refused" in str(star.get_attribute("data-error"))

        # The watchlist filter shows only the starred market.
        page.check("[data-testid=watch-filter]")
        page.wait_for_function(
            "document.querySelectorAll('[data-testid=market-row]').length === 1", timeout=10_000
        )
        assert page.get_attribute("[data-testid=market-row]", "data-ticker") == first
        page.uncheck("[data-testid=watch-filter]")

        # An alert on the open market just around its price: the simulator's next move fires it.
        page.click(f"[data-testid=market-row][data-ticker='{first}']")
        page.wait_for_selector(f"[data-testid=market-view][data-ticker='{first}']")
        page.wait_for_selector("[data-testid=alerts] [data-testid=alert-create]", timeout=10_000)
        created = False
        for _ in range(10):
            price = store.query("marketData:getPrice", {"ticker": first})["price"]
            page.fill("[data-testid=alert-above]", f"{price + 0.01:.2f}")
            page.fill("[data-testid=alert-below]", f"{price - 0.01:.2f}")
            page.click("[data-testid=alert-create]")
            try:
                page.wait_for_selector("[data-testid=armed-alert]", timeout=3_000)
                created = True
                break
            except Exception:  # the price moved past a level first: refused, try again
                assert page.locator("[data-testid=alert-error]").count() == 1
        assert created, "no alert could be created around the moving price"
        fired = page.wait_for_selector(
            f"[data-testid=fired-alert][data-ticker='{first}']", timeout=60_000
        )
        assert fired is not None and "hit at" in str(fired.text_content())
        assert page.locator("[data-testid=armed-alert]").count() == 0

        # Load more trades: older ones appended below, newest first, no duplicate.
        # A first page that held every trade is the last page, which grows instead of
        # offering more: open the market afresh once it has more than a page of trades.
        for _ in range(120):
            if len(store.query("marketData:getRecentTrades", {"ticker": first, "limit": 60})) > 45:
                break
            page.wait_for_timeout(500)
        page.click(f"[data-testid=market-row][data-ticker='{second}']")
        page.wait_for_selector(f"[data-testid=market-view][data-ticker='{second}']")
        page.click(f"[data-testid=market-row][data-ticker='{first}']")
        page.wait_for_selector("[data-testid=load-more]", timeout=30_000)
        shown = page.locator("[data-testid=trades] [data-testid=trade]").count()
        assert shown >= 30
        page.click("[data-testid=load-more]")
        page.wait_for_function(
            f"document.querySelectorAll('[data-testid=trades] [data-testid=trade]').length > {shown}",
            timeout=20_000,
        )
        rows = page.eval_on_selector_all(
            "[data-testid=trades] [data-testid=trade]",
            "rows => rows.map(r => [r.dataset.tradeId, Number(r.dataset.ts)])",
        )
        ids = [r[0] for r in rows]
        assert len(ids) == len(set(ids))
        stamps = [r[1] for r in rows]
        assert stamps == sorted(stamps, reverse=True)
        _shot(page, "dashboard-users.png")
        assert errors == []
