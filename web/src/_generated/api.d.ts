/* eslint-disable */
/**
 * Generated `api` utility.
 *
 * THIS CODE IS AUTOMATICALLY GENERATED.
 *
 * To regenerate, run `marketpulse codegen`.
 * @module
 */

import type { FunctionReference } from "convex/server";

/**
 * A utility for referencing the public functions of the store's API.
 *
 * Usage:
 * ```js
 * const myFunctionReference = api.myModule.myFunction;
 * ```
 */
export declare const api: {
  alerts: {
    /** Alert the signed-in user when the market's price reaches `above` or `below`. */
    create: FunctionReference<
      "mutation",
      "public",
      { ticker: string; above?: number | null; below?: number | null },
      string,
    >;
    /** The signed-in user's alerts, newest first; fired ones carry `triggeredAt`. */
    list: FunctionReference<
      "query",
      "public",
      Record<string, never>,
      Array<{
        id: string;
        ticker: string;
        above: number | null;
        below: number | null;
        createdAt: number;
        triggeredAt: number | null;
        triggerPrice: number | null;
        delivery: {
          state: "none" | "pending" | "retrying" | "delivered" | "failed";
          attempts: number;
          error: string | null;
          deliveredAt: number | null;
        } | null;
      }>,
    >;
    /** Delete one of the signed-in user's alerts (a pending delivery is dropped). */
    remove: FunctionReference<"mutation", "public", { id: string }, null>;
  };
  marketData: {
    /** OHLCV candles from trades, oldest first; a quiet interval repeats the last close. */
    getCandles: FunctionReference<
      "query",
      "public",
      {
        ticker: string;
        interval: "1m" | "5m" | "1h";
        limit?: number;
        before?: number | null;
      },
      Array<{
        start: number;
        open: number;
        high: number;
        low: number;
        close: number;
        volume: number;
        trades: number;
      }> | null,
    >;
    /** A market's metadata with its latest price and 24 h change; null if unknown. */
    getMarket: FunctionReference<
      "query",
      "public",
      { ticker: string },
      {
        ticker: string;
        title: string;
        subtitle: string | null;
        eventTicker: string | null;
        seriesTicker: string | null;
        status: string;
        closeTime: number | null;
        price: number | null;
        yesBid: number | null;
        yesAsk: number | null;
        volume: number | null;
        openInterest: number | null;
        result: string | null;
        settlementValue: number | null;
        settledAt: number | null;
        live: boolean;
        previousPrice: number | null;
        changePercent24h: number;
        updatedAt: number;
      } | null,
    >;
    /** Top `depth` levels of a market's book, best first; null while it has no valid, live book (its stream's lease lapsed, or the store restarted and its writer has not renewed). */
    getOrderbook: FunctionReference<
      "query",
      "public",
      { ticker: string; depth?: number },
      {
        ticker: string;
        bids: Array<[number, number]>;
        asks: Array<[number, number]>;
        spread: number | null;
        mid: number | null;
        updatedAt: number;
        live: boolean;
      } | null,
    >;
    /** Latest price of a market, its 24 h change, best bid/ask, volume and open interest. */
    getPrice: FunctionReference<
      "query",
      "public",
      { ticker: string },
      {
        ticker: string;
        price: number | null;
        changePercent24h: number;
        yesBid: number | null;
        yesAsk: number | null;
        volume: number | null;
        openInterest: number | null;
        updatedAt: number;
        live: boolean;
      } | null,
    >;
    /** A market's newest trades, newest first; null for an unknown ticker. */
    getRecentTrades: FunctionReference<
      "query",
      "public",
      { ticker: string; limit?: number },
      Array<{
        id: string;
        ticker: string;
        side: "buy" | "sell";
        price: number;
        size: number;
        timestamp: number;
      }> | null,
    >;
    /** Health of every feed stream, by stream id. */
    getStreamStatus: FunctionReference<
      "query",
      "public",
      Record<string, never>,
      Array<{
        streamId: string;
        state: string;
        live: boolean;
        markets: Array<string>;
        marketCount: number;
        messagesPerSecond: number | null;
        lastMessageAt: number | null;
        reconnects: number | null;
        gaps: number | null;
        lagMs: number | null;
        updatedAt: number;
      }>,
    >;
    /** A market's trades, newest first, a page at a time (`usePaginatedQuery`). */
    getTradeHistory: FunctionReference<
      "query",
      "public",
      {
        ticker: string;
        paginationOpts: {
          numItems: number;
          cursor: string | null;
          endCursor?: string | null;
          id?: number;
          maximumRowsRead?: number;
          maximumBytesRead?: number;
        };
      },
      {
        page: Array<{
          id: string;
          ticker: string;
          side: "buy" | "sell";
          price: number;
          size: number;
          timestamp: number;
        }>;
        isDone: boolean;
        continueCursor: string;
        splitCursor?: string | null;
        pageStatus?: "SplitRecommended" | "SplitRequired" | null;
      },
    >;
    /** Markets by ticker, optionally of one status and matching `search` (ticker, event, title). */
    listMarkets: FunctionReference<
      "query",
      "public",
      {
        status?: string | null;
        search?: string | null;
        limit?: number;
        prices?: boolean;
      },
      Array<{
        ticker: string;
        title: string;
        subtitle: string | null;
        eventTicker: string | null;
        seriesTicker: string | null;
        status: string;
        closeTime: number | null;
        price: number | null;
        yesBid: number | null;
        yesAsk: number | null;
        volume: number | null;
        openInterest: number | null;
        result: string | null;
        settlementValue: number | null;
        settledAt: number | null;
        live: boolean;
      }>,
    >;
  };
  settings: {
    /** The signed-in user's settings: `{alertWebhook}` (null when unset). */
    get: FunctionReference<
      "query",
      "public",
      Record<string, never>,
      { alertWebhook: string | null },
    >;
    /** Where fired alerts are POSTed (JSON); null stops deliveries not yet made. */
    setAlertWebhook: FunctionReference<
      "mutation",
      "public",
      { url: string | null },
      null,
    >;
  };
  watchlists: {
    /** Watch a market; returns False if it was watched already. */
    add: FunctionReference<"mutation", "public", { ticker: string }, boolean>;
    /** The tickers the signed-in user watches, in ticker order. */
    list: FunctionReference<
      "query",
      "public",
      Record<string, never>,
      Array<string>,
    >;
    /** The markets the signed-in user watches, in ticker order, as `listMarkets` gives them without prices (`prices: false`). */
    markets: FunctionReference<
      "query",
      "public",
      Record<string, never>,
      Array<{
        ticker: string;
        title: string;
        subtitle: string | null;
        eventTicker: string | null;
        seriesTicker: string | null;
        status: string;
        closeTime: number | null;
        price: number | null;
        yesBid: number | null;
        yesAsk: number | null;
        volume: number | null;
        openInterest: number | null;
        result: string | null;
        settlementValue: number | null;
        settledAt: number | null;
        live: boolean;
      }>,
    >;
    /** Stop watching a market; returns False if it was not watched. */
    remove: FunctionReference<"mutation", "public", { ticker: string }, boolean>;
  };
};

/**
 * A utility for referencing internal functions (admin key only).
 */
export declare const internal: {
  alerts: {
    /** POST a fired alert to its user's webhook (attempt `attempt`); never raises for a failing webhook: the failure is recorded and retried later. */
    deliver: FunctionReference<
      "action",
      "internal",
      { alertId: string; attempt: number },
      string,
    >;
    /** Where and what to post for a fired alert; null once it is gone or the webhook unset. */
    deliveryTarget: FunctionReference<
      "query",
      "internal",
      { alertId: string },
      Record<string, any> | null,
    >;
    /** Fire what one `applyUpdates` left armed past its per-ticker limit, at today's price. */
    fireBacklog: FunctionReference<
      "mutation",
      "internal",
      { ticker: string },
      number,
    >;
    /** Record one delivery attempt; after a failure, schedule the next one with backoff. */
    recordDelivery: FunctionReference<
      "mutation",
      "internal",
      { alertId: string; attempt: number; error: string | null },
      string,
    >;
  };
  marketData: {
    /** Apply one batch from the worker (docs/interfaces.md §5); idempotent. Fires the price alerts the new prices reach, in the same transaction. */
    applyUpdates: FunctionReference<
      "mutation",
      "internal",
      { batch: Record<string, any> },
      Record<string, number>,
    >;
    /** Delete trades and candles older than `olderThanMs` (an age), `limit` at most per call. */
    cleanup: FunctionReference<
      "mutation",
      "internal",
      { olderThanMs: number; limit?: number; nowMs?: number | null },
      Record<string, any>,
    >;
    /** Mark lapsed stream leases dead, and their books and prices stale (a cron, every second). */
    expireLeases: FunctionReference<
      "mutation",
      "internal",
      { continued?: boolean },
      Record<string, number | boolean>,
    >;
    /** Store a stream's health report; an older report than the stored one is ignored. */
    reportStreamStatus: FunctionReference<
      "mutation",
      "internal",
      { status: Record<string, any> },
      boolean,
    >;
    /** Mark every lease dead: run as the store starts, so nothing is live until renewed (again while it answers `more`: the at-start runner does so). */
    resetLeases: FunctionReference<
      "mutation",
      "internal",
      Record<string, never>,
      Record<string, number | boolean>,
    >;
    /** Write the exchange's candles of complete past intervals (a market's history): one object per candle in `candles`, or rows of bytes per market and interval in `packed` (what the pipeline sends: see :func:`~marketpulse.marketdata._batch.parse_packed_candles`). */
    upsertCandles: FunctionReference<
      "mutation",
      "internal",
      {
        candles?: Array<Record<string, any>> | null;
        packed?: Array<Record<string, any>> | null;
      },
      Record<string, number>,
    >;
    /** Insert or update market metadata from the exchange's REST API. */
    upsertMarkets: FunctionReference<
      "mutation",
      "internal",
      { markets: Array<Record<string, any>> },
      Record<string, number>,
    >;
  };
};
