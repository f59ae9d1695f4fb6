import { useQuery } from "convex/react";
import { api } from "../_generated/api";
import { formatDepth, formatPrice, formatPriceFixed, formatSpread, priceDecimals } from "../format";
import type { Orderbook as Book } from "../types";
import { Flash } from "./Flash";
import { SkeletonRows } from "./Skeleton";

export interface LadderRow {
  price: number;
  size: number;
  /** Size from the best level up to and including this one. */
  total: number;
  /** Depth bar width, 0–100: `total` against the deeper of the two sides. */
  depthPct: number;
}

/** Cumulative depth for each side, scaled against the deeper side so the bars compare. */
export function ladder(book: Pick<Book, "bids" | "asks">): { bids: LadderRow[]; asks: LadderRow[] } {
  const cumulate = (levels: Array<[number, number]>) => {
    let total = 0;
    return levels.map(([price, size]) => {
      total += size;
      return { price, size, total, depthPct: 0 };
    });
  };
  const bids = cumulate(book.bids);
  const asks = cumulate(book.asks);
  const deepest = Math.max(bids.at(-1)?.total ?? 0, asks.at(-1)?.total ?? 0);
  for (const row of [...bids, ...asks]) {
    row.depthPct = deepest > 0 ? (row.total / deepest) * 100 : 0;
  }
  return { bids, asks };
}

function Level({ row, side, decimals }: { row: LadderRow; side: "bid" | "ask"; decimals: number }) {
  // Bids read outward from the centre (total, size, price); asks mirror them, so the best
  // bid and the best ask sit side by side on the top row.
  const price = <span className="level-price">{formatPriceFixed(row.price, decimals)}</span>;
  const size = (
    <Flash value={row.size} className="level-size">
      {formatDepth(row.size)}
    </Flash>
  );
  const total = <span className="level-total">{formatDepth(row.total)}</span>;
  return (
    <div className={`level level-${side}`} data-testid={`${side}-level`} data-price={row.price}>
      <span className="depth" style={{ width: `${row.depthPct.toFixed(1)}%` }} aria-hidden="true" />
      {side === "bid" ? (
        <>
          {total}
          {size}
          {price}
        </>
      ) : (
        <>
          {price}
          {size}
          {total}
        </>
      )}
    </div>
  );
}

/** The order book: bids and asks side by side, best first, with depth bars and the spread. */
export function Orderbook({
  ticker,
  depth = 10,
  closed = false,
  stale = false,
  unknown = false,
}: {
  ticker: string;
  depth?: number;
  closed?: boolean;
  stale?: boolean;
  unknown?: boolean;
}) {
  const book = useQuery(api.marketData.getOrderbook, { ticker, depth });
  return <OrderbookView book={book} closed={closed} stale={stale} unknown={unknown} />;
}

/** A book as shown: `undefined` while loading, `null` when there is no valid book (`stale`: the
 * store withholds it because the market's feed is lost). */
export function OrderbookView({
  book,
  closed = false,
  stale = false,
  unknown = false,
}: {
  book: Book | null | undefined;
  closed?: boolean;
  stale?: boolean;
  /** The store has no such market. */
  unknown?: boolean;
}) {
  let body;
  let spread = null;
  if (book === undefined) {
    body = <SkeletonRows count={8} />;
  } else if (book === null || (book.bids.length === 0 && book.asks.length === 0)) {
    body = (
      <div className="empty" data-testid="book-empty">
        {closed
          ? "Market closed: no resting orders"
          : book !== null
            ? "The book is empty"
            : unknown
              ? "Unknown market"
              : stale
                ? "The feed is lost: no live book"
                : "No order book yet"}
      </div>
    );
  } else {
    const { bids, asks } = ladder(book);
    const decimals = priceDecimals([...book.bids, ...book.asks].map(([p]) => p));
    spread = (
      <div className="spread" data-testid="spread">
        <span>
          Spread{" "}
          <Flash value={book.spread} className="spread-value">
            {formatSpread(book.spread)}
          </Flash>
        </span>
        <span>
          Mid <span className="spread-value">{formatPrice(book.mid)}</span>
        </span>
      </div>
    );
    body = (
      <div className="book-grid">
        <div className="book-side book-bids" data-testid="bids">
          <div className="level level-head" aria-hidden="true">
            <span>Total</span>
            <span>Size</span>
            <span>Bid</span>
          </div>
          {bids.map((row) => (
            <Level key={row.price} row={row} side="bid" decimals={decimals} />
          ))}
          {bids.length === 0 ? <div className="empty-side">No bids</div> : null}
        </div>
        <div className="book-side book-asks" data-testid="asks">
          <div className="level level-head" aria-hidden="true">
            <span>Ask</span>
            <span>Size</span>
            <span>Total</span>
          </div>
          {asks.map((row) => (
            <Level key={row.price} row={row} side="ask" decimals={decimals} />
          ))}
          {asks.length === 0 ? <div className="empty-side">No asks</div> : null}
        </div>
      </div>
    );
  }

  return (
    <section className="panel book" data-testid="orderbook" aria-label="Order book">
      <header className="panel-head">
        <h2>Order book</h2>
        {spread ?? <span className="panel-sub">YES · contracts</span>}
      </header>
      {body}
    </section>
  );
}
