import { type ReactNode, useRef } from "react";
import { useQuery } from "convex/react";
import { api } from "../_generated/api";
import { formatPriceFixed, formatSize, formatTime, priceDecimals } from "../format";
import type { Trade } from "../types";
import { SkeletonRows } from "./Skeleton";

/**
 * Ids of the trades above the newest one already shown for the same ticker (the list is newest
 * first): they get the "new" highlight. Older rows shown below (a "Load more") are not new.
 * Nothing is fresh on the first result (or after switching markets).
 */
function useFreshIds(ticker: string, trades: ReadonlyArray<{ id: string }> | null | undefined): Set<string> {
  const memo = useRef<{ ticker: string; trades: unknown; seen: Set<string>; fresh: Set<string> } | null>(null);
  if (!trades) return new Set();
  const last = memo.current;
  if (last && last.ticker === ticker && last.trades === trades) return last.fresh;
  const fresh = new Set<string>();
  if (last && last.ticker === ticker) {
    for (const t of trades) {
      if (last.seen.has(t.id)) break;
      fresh.add(t.id);
    }
  }
  memo.current = { ticker, trades, seen: new Set(trades.map((t) => t.id)), fresh };
  return fresh;
}

/** The latest trades of one market, newest first; each new trade flashes in. */
export function RecentTrades({ ticker, limit = 30 }: { ticker: string; limit?: number }) {
  const trades = useQuery(api.marketData.getRecentTrades, { ticker, limit });
  return <TradesView ticker={ticker} trades={trades} />;
}

/** Trades as shown, newest first: `undefined` while loading; `footer` below the list. */
export function TradesView({
  ticker,
  trades,
  footer,
}: {
  ticker: string;
  trades: readonly Trade[] | null | undefined;
  footer?: ReactNode;
}) {
  const fresh = useFreshIds(ticker, trades);

  let body;
  if (trades === undefined) {
    body = <SkeletonRows count={8} />;
  } else if (trades === null || trades.length === 0) {
    body = (
      <div className="empty" data-testid="trades-empty">
        {trades === null ? "Unknown market" : "No trades yet"}
      </div>
    );
  } else {
    const decimals = priceDecimals(trades.map((t) => t.price));
    body = (
      <ol className="trades-list" data-testid="trades-list">
        {trades.map((trade) => (
          <li
            key={trade.id}
            className={`trade trade-${trade.side}${fresh.has(trade.id) ? " trade-new" : ""}`}
            data-testid="trade"
            data-trade-id={trade.id}
            data-ts={trade.timestamp}
          >
            <span className="trade-side">{trade.side === "buy" ? "BUY" : "SELL"}</span>
            <span className="trade-price">{formatPriceFixed(trade.price, decimals)}</span>
            <span className="trade-size">{formatSize(trade.size)}</span>
            <time className="trade-time" dateTime={new Date(trade.timestamp).toISOString()}>
              {formatTime(trade.timestamp)}
            </time>
          </li>
        ))}
      </ol>
    );
  }

  return (
    <section className="panel trades" data-testid="trades" aria-label="Recent trades">
      <header className="panel-head">
        <h2>Trades</h2>
        <span className="panel-sub">taker side</span>
      </header>
      <div className="trade trade-head" aria-hidden="true">
        <span>Side</span>
        <span>Price</span>
        <span>Size</span>
        <span>Time</span>
      </div>
      {body}
      {footer}
    </section>
  );
}
