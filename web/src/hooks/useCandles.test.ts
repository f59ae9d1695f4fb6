import { describe, expect, it, vi } from "vitest";
import { renderHook } from "@testing-library/react";
import type { Candle } from "../types";
import { HISTORY_CANDLES, historyEnd, LIVE_CANDLES, mergeCandles, useCandles } from "./useCandles";

const MIN = 60_000;
const candle = (i: number, close = 0.5): Candle => ({
  start: i * MIN, open: 0.5, high: 0.6, low: 0.4, close, volume: 1, trades: 1,
});
const span = (from: number, to: number, close?: number) =>
  Array.from({ length: to - from }, (_, k) => candle(from + k, close));

describe("historyEnd", () => {
  it("needs no history while the live window holds every candle", () => {
    expect(historyEnd([], undefined)).toBeUndefined();
    expect(historyEnd(span(0, LIVE_CANDLES - 1), undefined)).toBeUndefined();
  });
  it("ends the history in the middle of a full live window", () => {
    expect(historyEnd(span(100, 100 + LIVE_CANDLES), undefined)).toBe((100 + LIVE_CANDLES / 2) * MIN);
  });
  it("keeps the end while the window overlaps it, and moves it before a gap opens", () => {
    const end = (100 + LIVE_CANDLES / 2) * MIN;
    // The window slid 31 minutes: its first candle is still before the end.
    expect(historyEnd(span(131, 131 + LIVE_CANDLES), end)).toBe(end);
    // 32 minutes: it starts at the end, so the next slide would leave a gap: move it now.
    expect(historyEnd(span(132, 132 + LIVE_CANDLES), end)).toBe((132 + LIVE_CANDLES / 2) * MIN);
  });
});

describe("mergeCandles", () => {
  it("puts the live window over the history, the live candles winning", () => {
    const merged = mergeCandles(span(0, 40, 0.1), span(30, 50, 0.9));
    expect(merged.map((c) => c.start)).toEqual(span(0, 50).map((c) => c.start));
    expect(merged[29]!.close).toBe(0.1);
    expect(merged[30]!.close).toBe(0.9);
  });
  it("shows the live window alone before the history arrives", () => {
    expect(mergeCandles(undefined, span(5, 8))).toEqual(span(5, 8));
    expect(mergeCandles([], span(5, 8))).toEqual(span(5, 8));
  });
  it("is empty when there are no candles at all", () => {
    expect(mergeCandles(span(0, 3), [])).toEqual([]);
  });
});

// The hook's wiring, with the two subscriptions played by a fake `useQuery`: which `before`
// it asks for as the live window slides, and what it shows meanwhile.
const served = new Map<string, Candle[] | null>();
const asked: Array<Record<string, unknown> | "skip"> = [];
vi.mock("convex/react", () => ({
  useQuery: (_query: unknown, args: Record<string, unknown> | "skip") => {
    asked.push(args);
    return args === "skip" ? undefined : served.get(JSON.stringify(args));
  },
}));

const liveArgs = (ticker = "KX") => JSON.stringify({ ticker, interval: "1m", limit: LIVE_CANDLES });
const historyArgs = (before: number, ticker = "KX") =>
  JSON.stringify({ ticker, interval: "1m", limit: HISTORY_CANDLES, before: before * MIN });
const starts = (candles: readonly Candle[] | null | undefined) => candles?.map((c) => c.start / MIN);
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, k) => from + k);

describe("useCandles", () => {
  it("shows the live window at once, the history under it, and moves the history before a gap opens", () => {
    served.clear();
    const { result, rerender } = renderHook(({ ticker }) => useCandles(ticker, "1m"), {
      initialProps: { ticker: "KX" },
    });
    expect(result.current).toEqual({ candles: undefined, complete: false });
    expect(asked.at(-1)).toBe("skip");

    served.set(liveArgs(), span(100, 164));
    rerender({ ticker: "KX" });
    expect(asked.at(-1)).toEqual(JSON.parse(historyArgs(132)));
    expect(starts(result.current.candles)).toEqual(range(100, 164));
    expect(result.current.complete).toBe(false);

    served.set(historyArgs(132), span(0, 132));
    rerender({ ticker: "KX" });
    expect(starts(result.current.candles)).toEqual(range(0, 164));
    expect(result.current.complete).toBe(true);

    // 31 minutes later the window still overlaps the history's end: same history.
    served.set(liveArgs(), span(131, 195));
    rerender({ ticker: "KX" });
    expect(asked.at(-1)).toEqual(JSON.parse(historyArgs(132)));
    expect(starts(result.current.candles)).toEqual(range(0, 195));

    // One more and it starts at the end: the history moves, the old one shown until it loads.
    served.set(liveArgs(), span(132, 196));
    rerender({ ticker: "KX" });
    expect(asked.at(-1)).toEqual(JSON.parse(historyArgs(164)));
    expect(starts(result.current.candles)).toEqual(range(0, 196));
    served.set(historyArgs(164), span(32, 164));
    rerender({ ticker: "KX" });
    expect(starts(result.current.candles)).toEqual(range(32, 196));

    // Another market: nothing of this one's history is shown while its own loads.
    served.set(liveArgs("KY"), span(500, 564));
    rerender({ ticker: "KY" });
    expect(asked.at(-1)).toEqual(JSON.parse(historyArgs(532, "KY")));
    expect(starts(result.current.candles)).toEqual(range(500, 564));
    expect(result.current.complete).toBe(false);
  });

  it("asks for no history while the live window holds every candle, and passes null through", () => {
    served.clear();
    served.set(liveArgs(), span(0, 10));
    const { result, rerender } = renderHook(({ ticker }) => useCandles(ticker, "1m"), {
      initialProps: { ticker: "KX" },
    });
    expect(asked.at(-1)).toBe("skip");
    expect(result.current).toEqual({ candles: span(0, 10), complete: true });
    served.set(liveArgs("NOPE"), null);
    rerender({ ticker: "NOPE" });
    expect(result.current).toEqual({ candles: null, complete: true });
  });
});
