import { describe, expect, it } from "vitest";
import type { Candle } from "../types";
import { historyEnd, LIVE_CANDLES, mergeCandles } from "./useCandles";

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
