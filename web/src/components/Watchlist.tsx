import { useMemo, useState } from "react";
import { useMutation, useQuery } from "convex/react";
import type { OptimisticLocalStore } from "convex/browser";
import { api } from "../_generated/api";
import { useAccount } from "../auth";

/** The signed-in user's watched tickers (live); null when signed out. */
export function useWatchlist(): ReadonlySet<string> | null {
  const { status } = useAccount();
  const list = useQuery(api.watchlists.list, status === "signedIn" ? {} : "skip");
  return useMemo(() => (list ? new Set(list) : null), [list]);
}

/** The optimistic watchlist after adding (or removing) `ticker`: applied before the server
 * answers, and dropped by the client if the mutation fails. */
export function optimisticWatch(adding: boolean) {
  return (store: OptimisticLocalStore, { ticker }: { ticker: string }) => {
    const current = store.getQuery(api.watchlists.list, {});
    if (current === undefined) return;
    const next = current.filter((t) => t !== ticker);
    if (adding) next.push(ticker);
    store.setQuery(api.watchlists.list, {}, next.sort());
  };
}

/** The star of a market row: flips at once (optimistic), rolls back if the store says no. */
export function WatchStar({ ticker, watched }: { ticker: string; watched: boolean }) {
  const add = useMutation(api.watchlists.add).withOptimisticUpdate(optimisticWatch(true));
  const remove = useMutation(api.watchlists.remove).withOptimisticUpdate(optimisticWatch(false));
  const [error, setError] = useState<string | null>(null);
  const toggle = () => {
    setError(null);
    (watched ? remove : add)({ ticker }).catch((e: unknown) => {
      const data = (e as { data?: { message?: string } }).data;
      setError(data?.message ?? (e instanceof Error ? e.message : String(e)));
    });
  };
  return <WatchStarView ticker={ticker} watched={watched} error={error} onToggle={toggle} />;
}

export function WatchStarView({
  ticker,
  watched,
  error,
  onToggle,
}: {
  ticker: string;
  watched: boolean;
  error: string | null;
  onToggle: () => void;
}) {
  return (
    <button
      type="button"
      className={`star${watched ? " star-on" : ""}${error ? " star-error" : ""}`}
      aria-pressed={watched}
      aria-label={watched ? `Remove ${ticker} from watchlist` : `Add ${ticker} to watchlist`}
      title={error ?? (watched ? "In your watchlist" : "Add to watchlist")}
      onClick={onToggle}
      data-testid="star"
      data-ticker={ticker}
      data-error={error ?? undefined}
    >
      {watched ? "★" : "☆"}
    </button>
  );
}

/** "All / ★ Watchlist" switch above the market list. */
export function WatchFilter({ only, onChange }: { only: boolean; onChange: (only: boolean) => void }) {
  return (
    <label className="watch-filter">
      <input type="checkbox" checked={only} onChange={(e) => onChange(e.target.checked)} data-testid="watch-filter" />
      ★ Watchlist only
    </label>
  );
}
