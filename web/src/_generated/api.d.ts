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
  marketData: {
    /** OHLCV candles from trades, oldest first; a quiet interval repeats the last close. */
    getCandles: FunctionReference<
      "query",
      "public",
      { ticker: string; interval: "1m" | "5m" | "1h"; limit?: number },
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
        previousPrice: number | null;
        changePercent24h: number;
        updatedAt: number;
      } | null,
    >;
    /** Top `depth` levels of a market's book, best first; null while it has no valid book. */
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
    /** Markets by ticker, optionally of one status and matching `search` (ticker, event, title). */
    listMarkets: FunctionReference<
      "query",
      "public",
      { status?: string | null; search?: string | null; limit?: number },
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
      }>,
    >;
  };
};

/**
 * A utility for referencing internal functions (admin key only).
 */
export declare const internal: {
  marketData: {
    /** Apply one batch from the worker (docs/interfaces.md §5); idempotent. */
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
    /** Store a stream's health report; an older report than the stored one is ignored. */
    reportStreamStatus: FunctionReference<
      "mutation",
      "internal",
      { status: Record<string, any> },
      boolean,
    >;
    /** Write the exchange's candles of complete past intervals (a market's history). */
    upsertCandles: FunctionReference<
      "mutation",
      "internal",
      { candles: Array<Record<string, any>> },
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
