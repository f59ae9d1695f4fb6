import { useEffect } from "react";
import { useQuery } from "convex/react";
import { api } from "../_generated/api";
import {
  direction,
  formatCompact,
  formatPercent,
  formatPrice,
  formatPriceFixed,
  formatTime,
  priceDecimals,
} from "../format";
import type { Price } from "../types";
import { Flash } from "./Flash";

/** The live price of one market: last price, 24 h change (coloured), bid/ask, volume. */
export function PriceDisplay({
  ticker,
  closed = false,
  unknown = false,
}: {
  ticker: string;
  closed?: boolean;
  unknown?: boolean;
}) {
  const price = useQuery(api.marketData.getPrice, { ticker });
  // The tab title follows the price, so a background tab still shows it.
  const shown = price?.price;
  useEffect(() => {
    document.title = shown == null ? `${ticker} · marketpulse` : `${formatPrice(shown)} ${ticker} · marketpulse`;
  }, [shown, ticker]);
  return <PriceView price={price} closed={closed} unknown={unknown} />;
}

/** A price as shown: `undefined` while loading, `null` when the market has none yet (or, with
 * `unknown`, when the store has no such market). */
export function PriceView({
  price,
  closed = false,
  unknown = false,
}: {
  price: Price | null | undefined;
  closed?: boolean;
  unknown?: boolean;
}) {
  if (price === undefined) {
    return (
      <div className="price price-loading" data-testid="price" aria-busy="true">
        <span className="skeleton skeleton-price" />
        <span className="skeleton skeleton-line" />
      </div>
    );
  }
  if (price === null) {
    return (
      <div className="price price-empty" data-testid="price">
        <span className="muted">{unknown ? "Unknown market" : "No price yet"}</span>
      </div>
    );
  }
  const dir = direction(price.changePercent24h);
  // Price, bid and ask share one precision so they line up (sub-cent markets).
  const decimals = priceDecimals([price.price, price.yesBid, price.yesAsk]);
  // The store decides liveness: a price whose stream lost its lease is shown, but as stale.
  const stale = price.live === false && !closed;
  return (
    <div className={`price${closed ? " price-closed" : ""}${stale ? " price-stale" : ""}`} data-testid="price">
      {stale ? (
        <div className="stale-banner" data-testid="price-stale" role="status">
          Stale: the feed is lost
          {price.updatedAt > 0 ? ` · last update ${formatTime(price.updatedAt)}` : ""}
        </div>
      ) : null}
      <div className="price-main">
        {price.price == null ? (
          <span className="price-value price-none" data-testid="price-value">
            No trades yet
          </span>
        ) : (
          <Flash value={price.price} className="price-value" data-testid="price-value">
            ${formatPriceFixed(price.price, decimals)}
          </Flash>
        )}
        <span className={`change change-${dir}`} data-testid="price-change">
          {dir === "up" ? "▲ " : dir === "down" ? "▼ " : ""}
          {formatPercent(price.changePercent24h)}
          <span className="change-label"> 24h</span>
        </span>
      </div>
      <dl className="price-stats">
        <div>
          <dt>Bid</dt>
          <dd className="bid">
            <Flash value={price.yesBid}>{formatPriceFixed(price.yesBid, decimals)}</Flash>
          </dd>
        </div>
        <div>
          <dt>Ask</dt>
          <dd className="ask">
            <Flash value={price.yesAsk}>{formatPriceFixed(price.yesAsk, decimals)}</Flash>
          </dd>
        </div>
        <div>
          <dt>Volume</dt>
          <dd>{formatCompact(price.volume)}</dd>
        </div>
        <div>
          <dt>Open int.</dt>
          <dd>{formatCompact(price.openInterest)}</dd>
        </div>
        <div>
          <dt>Updated</dt>
          <dd>{price.updatedAt > 0 ? formatTime(price.updatedAt) : "—"}</dd>
        </div>
      </dl>
    </div>
  );
}
