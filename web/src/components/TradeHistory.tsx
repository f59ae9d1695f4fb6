import { usePaginatedQuery } from "convex/react";
import { api } from "../_generated/api";
import { TradesView } from "./RecentTrades";

type Status = "LoadingFirstPage" | "CanLoadMore" | "LoadingMore" | "Exhausted";

/** A market's trades, newest first, live; "Load more" pages back through the history. */
export function TradeHistory({ ticker, pageSize = 30 }: { ticker: string; pageSize?: number }) {
  const { results, status, loadMore } = usePaginatedQuery(
    api.marketData.getTradeHistory,
    { ticker },
    { initialNumItems: pageSize },
  );
  return (
    <TradesView
      ticker={ticker}
      trades={status === "LoadingFirstPage" ? undefined : results}
      footer={<LoadMore status={status} count={results.length} onLoadMore={() => loadMore(pageSize)} />}
    />
  );
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
