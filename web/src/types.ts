/** Result types of the marketData queries, taken from the generated `api` (so they follow codegen). */
import type { FunctionReturnType } from "convex/server";
import type { api } from "./_generated/api";

type MD = typeof api.marketData;

export type Price = NonNullable<FunctionReturnType<MD["getPrice"]>>;
export type Orderbook = NonNullable<FunctionReturnType<MD["getOrderbook"]>>;
export type Trade = NonNullable<FunctionReturnType<MD["getRecentTrades"]>>[number];
export type MarketSummary = FunctionReturnType<MD["listMarkets"]>[number];
export type Market = NonNullable<FunctionReturnType<MD["getMarket"]>>;
export type Candle = NonNullable<FunctionReturnType<MD["getCandles"]>>[number];
export type CandleInterval = "1m" | "5m" | "1h";
export type StreamStatus = FunctionReturnType<MD["getStreamStatus"]>[number];

/** Kalshi's statuses in which a market trades; every other status is shown as closed. */
const TRADING = new Set(["open", "active", "initialized", "unopened"]);

export function isTrading(status: string | null | undefined): boolean {
  return status == null || TRADING.has(status.toLowerCase());
}
