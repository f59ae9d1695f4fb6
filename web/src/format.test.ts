import { describe, expect, it } from "vitest";
import {
  direction,
  formatAgo,
  formatCloseTime,
  formatCompact,
  formatDepth,
  formatMs,
  formatPercent,
  formatPrice,
  formatPriceFixed,
  formatRate,
  formatSize,
  formatSpread,
  formatTime,
  priceDecimals,
} from "./format";

describe("formatPrice", () => {
  it("shows cents with two decimals, as the seed's toFixed(2)", () => {
    expect(formatPrice(0.52)).toBe("0.52");
    expect(formatPrice(0.5)).toBe("0.50");
    expect(formatPrice(1)).toBe("1.00");
    expect(formatPrice(0)).toBe("0.00");
  });
  it("keeps sub-cent precision up to four places", () => {
    expect(formatPrice(0.5234)).toBe("0.5234");
    expect(formatPrice(0.525)).toBe("0.525");
    expect(formatPrice(0.12345)).toBe("0.1235");
  });
  it("keeps two decimals when four places round to whole cents", () => {
    expect(formatPrice(0.99999)).toBe("1.00");
    expect(formatPrice(0.10004)).toBe("0.10");
    expect(formatPrice(0.00000001)).toBe("0.00");
    expect(formatPrice(0.12304)).toBe("0.123");
  });
  it("survives float noise without showing it", () => {
    expect(formatPrice(0.1 + 0.2)).toBe("0.30");
    expect(formatPrice(0.07 * 3)).toBe("0.21");
  });
  it("shows a dash for missing or non-finite values", () => {
    expect(formatPrice(null)).toBe("—");
    expect(formatPrice(undefined)).toBe("—");
    expect(formatPrice(Number.NaN)).toBe("—");
    expect(formatPrice(Number.POSITIVE_INFINITY)).toBe("—");
  });
});

describe("priceDecimals and formatPriceFixed", () => {
  it("gives a column of prices one precision, enough for the finest tick", () => {
    expect(priceDecimals([0.5, 0.51, null])).toBe(2);
    expect(priceDecimals([0.945, 0.94, 0.938])).toBe(3);
    expect(priceDecimals([0.9455, 0.94])).toBe(4);
    expect(priceDecimals([0.123456])).toBe(4);
    expect(priceDecimals([0.1 + 0.2])).toBe(2);
    expect(priceDecimals([])).toBe(2);
    expect([0.945, 0.94].map((p) => formatPriceFixed(p, 3))).toEqual(["0.945", "0.940"]);
  });
});

describe("formatSpread", () => {
  it("formats a spread like a price", () => {
    expect(formatSpread(0.01)).toBe("0.01");
    expect(formatSpread(0.0025)).toBe("0.0025");
    expect(formatSpread(null)).toBe("—");
  });
});

describe("formatSize and formatCompact", () => {
  it("separates thousands and keeps fractional contracts", () => {
    expect(formatSize(1234567)).toBe("1,234,567");
    expect(formatSize(12.5)).toBe("12.5");
    expect(formatSize(0.333333)).toBe("0.33");
  });
  it("shows a book's sizes in full below 100,000 contracts and compact above", () => {
    expect(formatDepth(98_765.43)).toBe("98,765.43");
    expect(formatDepth(123_456.78)).toBe("123K");
    expect(formatDepth(1_481_481.45)).toBe("1.5M");
    expect(formatDepth(null)).toBe("—");
  });
  it("moves to the next unit when the figure rounds up to 1000", () => {
    expect(formatCompact(999_499)).toBe("999K");
    expect(formatCompact(999_500)).toBe("1M");
    expect(formatCompact(999_950)).toBe("1M");
    expect(formatCompact(-999_999)).toBe("-1M");
    expect(formatCompact(999_950_000)).toBe("1B");
    expect(formatCompact(2.5e12)).toBe("2500B");
  });
  it("compacts large counts", () => {
    expect(formatCompact(950)).toBe("950");
    expect(formatCompact(1000)).toBe("1K");
    expect(formatCompact(12_345)).toBe("12.3K");
    expect(formatCompact(4_500_000)).toBe("4.5M");
    expect(formatCompact(250_000_000)).toBe("250M");
    expect(formatCompact(-2500)).toBe("-2.5K");
    expect(formatCompact(undefined)).toBe("—");
  });
});

describe("formatPercent and direction", () => {
  it("signs changes and never shows -0.00", () => {
    expect(formatPercent(1.254)).toBe("+1.25%");
    expect(formatPercent(-0.4)).toBe("-0.40%");
    expect(formatPercent(0)).toBe("0.00%");
    expect(formatPercent(-0.001)).toBe("0.00%");
  });
  it("gives the colour of a change; rounding to 0.00 is flat", () => {
    expect(direction(2)).toBe("up");
    expect(direction(-2)).toBe("down");
    expect(direction(0.001)).toBe("flat");
    expect(direction(null)).toBe("flat");
  });
});

describe("times", () => {
  it("formats a wall-clock time with seconds", () => {
    const t = new Date(2026, 0, 2, 9, 5, 7).getTime();
    expect(formatTime(t, new Date(2026, 0, 2, 23, 59).getTime())).toBe("09:05:07");
    expect(formatTime(Date.now())).toMatch(/^\d\d:\d\d:\d\d$/);
    expect(formatTime(null)).toBe("—");
  });
  it("gives the date of a time on another day, so it does not read as today", () => {
    const t = new Date(2026, 11, 3, 14, 3, 7).getTime();
    expect(formatTime(t, new Date(2026, 11, 6, 9, 0).getTime())).toBe("Dec 3 14:03");
    expect(formatTime(t, new Date(2027, 0, 1, 9, 0).getTime())).toBe("Dec 3 2026 14:03");
    expect(formatTime(t, new Date(2026, 11, 3, 0, 0).getTime())).toBe("14:03:07");
  });
  it("says how long ago", () => {
    const now = 1_000_000_000;
    expect(formatAgo(now - 500, now)).toBe("now");
    expect(formatAgo(now - 12_000, now)).toBe("12s ago");
    expect(formatAgo(now - 4 * 60_000, now)).toBe("4m ago");
    expect(formatAgo(now - 3 * 3_600_000, now)).toBe("3h ago");
    expect(formatAgo(now - 3 * 86_400_000, now)).toBe("3d ago");
    expect(formatAgo(null, now)).toBe("never");
    // A clock slightly ahead of ours is not "in the future".
    expect(formatAgo(now + 5000, now)).toBe("now");
  });
  it("describes a close time", () => {
    const now = 1_000_000_000;
    expect(formatCloseTime(now + 30_000, now)).toBe("closes in <1m");
    expect(formatCloseTime(now + 25 * 60_000, now)).toBe("closes in 25m");
    expect(formatCloseTime(now + 200 * 60_000, now)).toBe("closes in 3h 20m");
    expect(formatCloseTime(now + 5 * 86_400_000, now)).toBe("closes in 5d");
    expect(formatCloseTime(now - 120_000, now)).toBe("closed 2m ago");
  });
  it("formats lag and rates", () => {
    expect(formatMs(3.4)).toBe("3 ms");
    expect(formatMs(1234)).toBe("1.2 s");
    expect(formatRate(2.345)).toBe("2.3");
    expect(formatRate(45.6)).toBe("46");
    expect(formatRate(12_500)).toBe("12.5K");
  });
});
