import { useMemo, useRef } from "react";
import { useQuery } from "convex/react";
import { api } from "../_generated/api";
import type { Candle, CandleInterval } from "../types";

/** The live window: the newest candles, pushed again with every trade. */
export const LIVE_CANDLES = 64;
/** History under it: a day of 1-minute candles and more (marketData:getCandles allows 1,500). */
export const HISTORY_CANDLES = 1500;

/**
 * Where the history ends (its `before`), given the live window and the current end.
 *
 * The history stops in the middle of the live window, so the two overlap and the window can
 * slide `LIVE_CANDLES / 2` intervals before the history must move: the long list is fetched
 * once per 32 new candles, not pushed again with every trade. While the live window holds
 * every candle there is (fewer than `LIVE_CANDLES`), no history is needed: undefined.
 */
export function historyEnd(live: readonly Candle[], current: number | undefined): number | undefined {
  if (live.length < LIVE_CANDLES) return current;
  if (current !== undefined && live[0]!.start < current) return current;
  return live[Math.floor(live.length / 2)]!.start;
}

/** History with the live window over it, oldest first; where they overlap the live one wins. */
export function mergeCandles(history: readonly Candle[] | undefined, live: readonly Candle[]): Candle[] {
  if (!history?.length || !live.length) return [...live];
  const first = live[0]!.start;
  let end = history.length;
  while (end > 0 && history[end - 1]!.start >= first) end--;
  return [...history.slice(0, end), ...live];
}

export interface CandleWindow {
  /** undefined while loading, null for a market the store does not know. */
  candles: Candle[] | null | undefined;
  /** Whether the history under the live window has arrived too (or none is needed). */
  complete: boolean;
}

/**
 * A market's candles for a live chart: the newest `LIVE_CANDLES` (marketData:getCandles) as
 * one subscription, the history before them as another (`before`). A trade re-sends only the
 * small live window; the history stays put until the window slides past its middle.
 */
export function useCandles(ticker: string, interval: CandleInterval): CandleWindow {
  const key = `${ticker}/${interval}`;
  const live = useQuery(api.marketData.getCandles, { ticker, interval, limit: LIVE_CANDLES });
  // Derived from the live window and the previous end only, so a repeated render agrees.
  const end = useRef<{ key: string; before: number } | null>(null);
  let before = end.current?.key === key ? end.current.before : undefined;
  if (live) {
    before = historyEnd(live, before);
    if (before !== undefined) end.current = { key, before };
  }
  const history = useQuery(
    api.marketData.getCandles,
    before === undefined ? "skip" : { ticker, interval, limit: HISTORY_CANDLES, before },
  );
  // The last history of this market and interval, shown while the next one loads.
  const kept = useRef<{ key: string; candles: Candle[] } | null>(null);
  if (history) kept.current = { key, candles: history };
  const shown = kept.current?.key === key ? kept.current.candles : undefined;
  const candles = useMemo(() => (live ? mergeCandles(shown, live) : live), [shown, live]);
  return { candles, complete: live !== undefined && (before === undefined || shown !== undefined) };
}
