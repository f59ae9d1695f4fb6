import { type ComponentType, type ReactNode, useEffect, useState } from "react";
import { useQuery } from "convex/react";
import { api } from "../_generated/api";
import { direction, formatPercent, formatPrice } from "../format";
import { useStableQuery } from "../hooks/useStableQuery";
import { isTrading, type MarketSummary } from "../types";
import { Flash } from "./Flash";
import { SkeletonRows } from "./Skeleton";
import { useWatchlist, WatchFilter, WatchStar } from "./Watchlist";

/**
 * The live price cell of one row: its own subscription, so one market ticking re-renders one
 * row, and the list itself (asked without prices) is not sent again with every price.
 */
function RowPrice({ market }: { market: MarketSummary }) {
  const live = useQuery(api.marketData.getPrice, { ticker: market.ticker });
  // A closed market's last price is final, not stale, whatever its stream's lease says (as in
  // the market view's price panel).
  const stale = live ? !live.live && isTrading(market.status) : false;
  return <RowPriceView price={live?.price} change={live?.changePercent24h} stale={stale} />;
}

/** A row's price and 24 h change. */
export function RowPriceView({
  price,
  change,
  stale = false,
}: {
  price: number | null | undefined;
  change: number | null | undefined;
  stale?: boolean;
}) {
  const dir = direction(change);
  return (
    <span className={`row-price${stale ? " row-price-stale" : ""}`} data-stale={stale ? "true" : undefined}>
      {stale ? (
        <span className="stale-tag" data-testid="row-stale" title="The feed for this market is lost: the price is not live">
          stale
        </span>
      ) : null}
      <Flash value={price} className="row-last" data-testid="row-price">
        {formatPrice(price)}
      </Flash>
      <span className={`row-change change-${dir}`}>{formatPercent(change)}</span>
    </span>
  );
}

function useDebounced<T>(value: T, ms: number): T {
  const [debounced, setDebounced] = useState(value);
  useEffect(() => {
    const id = window.setTimeout(() => setDebounced(value), ms);
    return () => window.clearTimeout(id);
  }, [value, ms]);
  return debounced;
}

/** "/" anywhere outside a text field focuses the market search, as on most trading screens. */
function useSlashToSearch() {
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const target = e.target as HTMLElement | null;
      if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey) return;
      if (target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
      const input = document.querySelector<HTMLInputElement>("[data-testid=market-search]");
      if (input && input.offsetParent !== null) {
        e.preventDefault();
        input.focus();
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);
}

/** Rows the market list shows at most; past them, a search finds the others. */
export const LIST_LIMIT = 100;

/** Whether a market matches the search box, as `listMarkets` matches `search` (ticker, event,
 * title, subtitle; case-insensitive); every market matches an empty search. */
export function matchesSearch(m: MarketSummary, search: string): boolean {
  const needle = search.trim().toLowerCase();
  if (!needle) return true;
  return [m.ticker, m.eventTicker, m.title, m.subtitle].some((v) => (v ?? "").toLowerCase().includes(needle));
}

/** Markets with search and live prices; choosing one calls `onSelect`. */
export function MarketList({
  selected,
  onSelect,
  onLoaded,
}: {
  selected: string | null;
  onSelect: (ticker: string) => void;
  onLoaded?: (markets: MarketSummary[]) => void;
}) {
  const [search, setSearch] = useState("");
  const query = useDebounced(search.trim(), 150);
  useSlashToSearch();
  // One more than shown, to know whether the list was cut.
  const markets = useStableQuery(
    api.marketData.listMarkets,
    query ? { search: query, limit: LIST_LIMIT + 1, prices: false } : { limit: LIST_LIMIT + 1, prices: false },
  );

  useEffect(() => {
    if (markets && onLoaded) onLoaded(markets);
  }, [markets, onLoaded]);
  const watched = useWatchlist();
  const [onlyWatched, setOnlyWatched] = useState(false);
  const watchOnly = onlyWatched && watched !== null;
  // The watched markets themselves: a filter of the list above would miss those past its limit.
  const watchedMarkets = useQuery(api.watchlists.markets, watchOnly ? {} : "skip");
  let shown: readonly MarketSummary[] | undefined;
  let more = false;
  if (watchOnly) {
    shown = watchedMarkets?.filter((m) => matchesSearch(m, query));
  } else if (markets) {
    more = markets.length > LIST_LIMIT;
    shown = more ? markets.slice(0, LIST_LIMIT) : markets;
  }

  return (
    <MarketListView
      markets={shown}
      more={more}
      watched={watched}
      Star={WatchStar}
      toolbar={watched ? <WatchFilter only={onlyWatched} onChange={setOnlyWatched} /> : null}
      emptyText={onlyWatched && watched ? "No market in your watchlist: star one" : undefined}
      search={search}
      searched={query}
      onSearch={setSearch}
      selected={selected}
      onSelect={onSelect}
      PriceCell={RowPrice}
    />
  );
}

/** The list as shown: `undefined` while loading; `PriceCell` renders each row's price. */
export function MarketListView({
  markets,
  search,
  searched,
  onSearch,
  selected,
  onSelect,
  PriceCell,
  watched = null,
  Star,
  toolbar,
  emptyText,
  more = false,
}: {
  markets: readonly MarketSummary[] | undefined;
  /** The store holds more markets than shown: say so, and that a search finds them. */
  more?: boolean;
  /** The signed-in user's watched tickers (null: signed out, no stars). */
  watched?: ReadonlySet<string> | null;
  Star?: ComponentType<{ ticker: string; watched: boolean }>;
  toolbar?: ReactNode;
  emptyText?: string;
  search: string;
  searched: string;
  onSearch: (text: string) => void;
  selected: string | null;
  onSelect: (ticker: string) => void;
  PriceCell: ComponentType<{ market: MarketSummary }>;
}) {
  const query = searched;

  let body;
  if (markets === undefined) {
    body = <SkeletonRows count={10} kind="market" />;
  } else if (markets.length === 0) {
    body = (
      <div className="empty" data-testid="markets-empty">
        {emptyText ?? (query ? `No market matches “${query}”` : "No markets yet: waiting for the feed")}
      </div>
    );
  } else {
    body = (
      <ul className="market-list" data-testid="market-list">
        {markets.map((m) => {
          const trading = isTrading(m.status);
          return (
            <li key={m.ticker}>
              <button
                type="button"
                className={`market-row${m.ticker === selected ? " market-row-selected" : ""}${trading ? "" : " market-row-closed"}`}
                onClick={() => onSelect(m.ticker)}
                aria-current={m.ticker === selected ? "true" : undefined}
                data-testid="market-row"
                data-ticker={m.ticker}
              >
                <span className="row-name">
                  <span className="row-title">{m.title || m.ticker}</span>
                  <span className="row-ticker" title={m.ticker}>
                    {m.subtitle || m.ticker}
                    {trading ? null : (
                      <span className="badge badge-closed" data-testid="row-status">
                        {m.status}
                        {m.settlementValue != null ? ` ${formatPrice(m.settlementValue)}` : ""}
                      </span>
                    )}
                  </span>
                </span>
                <PriceCell market={m} />
              </button>
              {Star && watched ? <Star ticker={m.ticker} watched={watched.has(m.ticker)} /> : null}
            </li>
          );
        })}
        {more ? (
          <li className="list-more" data-testid="markets-more">
            {query
              ? `The first ${markets.length} matches: narrow the search`
              : `The first ${markets.length} markets: search to find the others`}
          </li>
        ) : null}
      </ul>
    );
  }

  return (
    <section className="markets" aria-label="Markets">
      <div className="search">
        <input
          type="search"
          placeholder="Search markets"
          value={search}
          onChange={(e) => onSearch(e.target.value)}
          aria-label="Search markets"
          data-testid="market-search"
          maxLength={200}
          spellCheck={false}
          autoComplete="off"
        />
        {search ? null : (
          <kbd className="kbd" aria-hidden="true">
            /
          </kbd>
        )}
      </div>
      {toolbar}
      {body}
    </section>
  );
}
