import { useCallback, useEffect, useState } from "react";
import { CandleChart } from "./components/CandleChart";
import { useConvexConnectionState } from "convex/react";
import { ConnectionStatus, connectionPhase } from "./components/ConnectionStatus";
import { MarketHeader, useFeedLost, useMarketInfo } from "./components/MarketHeader";
import { MarketList } from "./components/MarketList";
import { Orderbook } from "./components/Orderbook";
import { PanelBoundary } from "./components/PanelBoundary";
import { PriceDisplay } from "./components/PriceDisplay";
import { AccountBox } from "./components/Account";
import { AlertsPanel } from "./components/Alerts";
import { TradeHistory } from "./components/TradeHistory";
import { AuthProvider } from "./auth";
import { StreamHealth } from "./components/StreamHealth";
import type { MarketSummary } from "./types";

/** The chosen market's panels, each failing on its own (`PanelBoundary`). */
export function MarketView({ ticker }: { ticker: string }) {
  const { closed, unknown } = useMarketInfo(ticker);
  const stale = useFeedLost(ticker);
  return (
    <div className="market-view" data-testid="market-view" data-ticker={ticker}>
      <div className="market-top">
        <PanelBoundary name="Market">
          <MarketHeader ticker={ticker} />
        </PanelBoundary>
        <PanelBoundary name="Price">
          <PriceDisplay ticker={ticker} closed={closed} unknown={unknown} />
        </PanelBoundary>
      </div>
      <PanelBoundary name="Chart">
        <CandleChart ticker={ticker} />
      </PanelBoundary>
      <div className="market-bottom">
        <PanelBoundary name="Order book">
          <Orderbook ticker={ticker} depth={10} closed={closed} stale={stale && !closed} unknown={unknown} />
        </PanelBoundary>
        <PanelBoundary name="Trades">
          <TradeHistory ticker={ticker} pageSize={30} unknown={unknown} />
        </PanelBoundary>
        <PanelBoundary name="Alerts">
          <AlertsPanel ticker={ticker} />
        </PanelBoundary>
      </div>
    </div>
  );
}

/** The trading screen: markets on the left, the chosen market on the right. */
export function App({ storeUrl, initialTicker }: { storeUrl: string; initialTicker: string | null }) {
  const [ticker, setTicker] = useState<string | null>(initialTicker);
  const phase = connectionPhase(useConvexConnectionState());
  // On a phone the list and the market take turns on screen.
  const [mobileView, setMobileView] = useState<"list" | "market">(initialTicker ? "market" : "list");

  const select = useCallback((t: string) => {
    setTicker(t);
    setMobileView("market");
  }, []);

  // Open the first market once the list arrives, so a first visit shows data, not a blank pane.
  const onLoaded = useCallback((markets: MarketSummary[]) => {
    setTicker((current) => current ?? markets[0]?.ticker ?? null);
  }, []);

  useEffect(() => {
    if (!ticker) return;
    const url = new URL(window.location.href);
    url.searchParams.set("market", ticker);
    window.history.replaceState(null, "", url);
  }, [ticker]);

  return (
    <AuthProvider storeUrl={storeUrl}>
    <div className="app" data-mobile-view={mobileView} data-connection={phase}>
      <header className="topbar">
        <button
          type="button"
          className="back"
          onClick={() => setMobileView(mobileView === "list" ? "market" : "list")}
          aria-label={mobileView === "list" ? "Show market" : "Show markets"}
        >
          {mobileView === "list" ? "Market ›" : "‹ Markets"}
        </button>
        <span className="brand">
          <svg viewBox="0 0 16 16" width="18" height="18" aria-hidden="true">
            <path d="M1 9h3l2-6 3 10 2-4h4" fill="none" stroke="currentColor" strokeWidth="2" />
          </svg>
          <span className="brand-name">marketpulse</span>
        </span>
        <span className="store-url" title="Store (deployment URL)">
          {storeUrl.replace(/^https?:\/\//, "")}
        </span>
        <AccountBox />
        <ConnectionStatus />
      </header>
      <aside className="sidebar">
        <PanelBoundary name="Markets">
          <MarketList selected={ticker} onSelect={select} onLoaded={onLoaded} />
        </PanelBoundary>
        <PanelBoundary name="Feed">
          <StreamHealth />
        </PanelBoundary>
      </aside>
      <main className="main">
        {ticker ? (
          <MarketView key={ticker} ticker={ticker} />
        ) : (
          <div className="empty empty-main">Choose a market</div>
        )}
      </main>
    </div>
    </AuthProvider>
  );
}
