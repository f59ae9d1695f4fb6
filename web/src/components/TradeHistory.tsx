import { useState } from "react";
import { usePaginatedQuery } from "convex/react";
import { api } from "../_generated/api";
import { TradesView } from "./RecentTrades";

type Status = "LoadingFirstPage" | "CanLoadMore" | "LoadingMore" | "Exhausted";

/**
 * A market's trades, newest first, live; "Load more" pages back through the history.
 *
 * A live first page grows with every new trade (its end stays where it was loaded, so the
 * pages behind it stay contiguous), so only the newest `shown` rows are drawn: a panel open
 * for a while would otherwise redraw every trade since it opened on each push. "Load more"
 * first shows rows already loaded, and asks the store for the next page only when none are.
 */
export function TradeHistory({
  ticker,
  pageSize = 30,
  unknown = false,
}: {
  ticker: string;
  pageSize?: number;
  /** The store has no such market: its (empty) history says so. */
  unknown?: boolean;
}) {
  const { results, status, loadMore } = usePaginatedQuery(
    api.marketData.getTradeHistory,
    { ticker },
    { initialNumItems: pageSize },
  );
  const [expanded, setExpanded] = useState({ ticker, rows: pageSize });
  const shown = expanded.ticker === ticker ? expanded.rows : pageSize;
  const view = tradeWindow(results, status, shown);
  const onLoadMore = () => {
    const rows = shown + pageSize;
    setExpanded({ ticker, rows });
    if (results.length < rows && status === "CanLoadMore") loadMore(pageSize);
  };
  return (
    <TradesView
      ticker={ticker}
      trades={status === "LoadingFirstPage" ? undefined : unknown && view.rows.length === 0 ? null : view.rows}
      footer={<LoadMore status={view.status} count={view.count} onLoadMore={onLoadMore} />}
    />
  );
}

/** What the panel draws of the loaded trades: the newest `shown` rows, and its footer's state
 * ("Load more" while loaded rows are hidden). */
export function tradeWindow<T>(
  results: readonly T[],
  status: Status,
  shown: number,
): { rows: readonly T[]; status: Status; count: number } {
  const hidden = results.length > shown;
  return {
    rows: hidden ? results.slice(0, shown) : results,
    status: hidden && status !== "LoadingMore" ? "CanLoadMore" : status,
    count: Math.min(results.length, shown),
  };
}

export function LoadMore({ status, count, onLoadMore }: { status: Status; count: number; onLoadMore: () => void }) {
  if (status === "LoadingFirstPage" || (status === "Exhausted" && count === 0)) return null;
  if (status === "Exhausted") {
    return (
      <div className="load-more-done" data-testid="trades-exhausted">
        All {count} trades
      </div>
    );
  }
  return (
    <button
      type="button"
      className="load-more"
      onClick={onLoadMore}
      disabled={status === "LoadingMore"}
      data-testid="load-more"
    >
      {status === "LoadingMore" ? "Loading…" : "Load more"}
    </button>
  );
}
