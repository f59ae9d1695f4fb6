import { useMemo } from "react";
import { useQueries, useQuery } from "convex/react";
import { api } from "../_generated/api";
import { formatCloseTime, formatPrice } from "../format";
import { useNow } from "../hooks/useNow";
import { isTrading, type Market, type Price } from "../types";

/** Title, ticker, event and status of the chosen market; closed markets say so plainly. */
export function MarketHeader({ ticker }: { ticker: string }) {
  const market = useQuery(api.marketData.getMarket, { ticker });
  const now = useNow(30_000);
  if (market === undefined) {
    return (
      <div className="market-head" aria-busy="true">
        <span className="skeleton skeleton-title" />
      </div>
    );
  }
  if (market === null) {
    return (
      <div className="market-head">
        <h1 className="market-title">{ticker}</h1>
        <span className="muted">Unknown market</span>
      </div>
    );
  }
  const trading = isTrading(market.status);
  return (
    <div className="market-head" data-testid="market-head" data-status={market.status}>
      <h1 className="market-title">{market.title || ticker}</h1>
      <div className="market-meta">
        <span className="market-ticker">{market.ticker}</span>
        {market.subtitle ? <span className="market-sub">{market.subtitle}</span> : null}
        <span className={`badge ${trading ? "badge-open" : "badge-closed"}`} data-testid="market-status">
          {trading ? "Open" : market.status === "closed" ? "Closed" : `Closed · ${market.status}`}
        </span>
        {market.settlementValue != null ? (
          <span className="badge badge-closed" data-testid="market-settlement">
            Settled at {formatPrice(market.settlementValue)}
            {market.result ? ` · ${market.result.toUpperCase()}` : ""}
          </span>
        ) : null}
        {market.closeTime ? <span className="muted">{formatCloseTime(market.closeTime, now)}</span> : null}
      </div>
    </div>
  );
}

/**
 * Whether the market is closed, for the panels that render differently then.
 *
 * Called by the market view outside its panels' boundaries, so a failing `getMarket` (a ticker
 * the store refuses, from the page address) must not throw here, as `useQuery` would: that
 * blanked the whole page. `useQueries` hands the error back; the panels show it, each in its own.
 */
export function useMarketClosed(ticker: string): boolean {
  return useMarketInfo(ticker).closed;
}

/** Whether the market is closed, and whether the store knows it at all (`getMarket` null), for
 * the panels that render differently then; it never throws, as {@link useMarketClosed}. */
export function useMarketInfo(ticker: string): { closed: boolean; unknown: boolean } {
  const queries = useMemo(() => ({ market: { query: api.marketData.getMarket, args: { ticker } } }), [ticker]);
  const market = useQueries(queries).market as Market | null | undefined | Error;
  if (market instanceof Error || market === undefined) return { closed: false, unknown: false };
  return { closed: market !== null && !isTrading(market.status), unknown: market === null };
}

/** Whether the store says the market's feed is lost (`live: false`), so that the book panel,
 * empty then, says why; it never throws, as {@link useMarketClosed}. */
export function useFeedLost(ticker: string): boolean {
  const queries = useMemo(() => ({ price: { query: api.marketData.getPrice, args: { ticker } } }), [ticker]);
  const price = useQueries(queries).price as Price | null | undefined | Error;
  return !!price && !(price instanceof Error) && price.live === false;
}
