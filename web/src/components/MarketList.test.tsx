import { describe, expect, it, vi } from "vitest";
import { act, fireEvent, render, screen } from "@testing-library/react";
import { getFunctionName } from "convex/server";
import type { MarketSummary } from "../types";
import { MarketList, matchesSearch } from "./MarketList";

// The store played by a fake `useQuery`: 130 markets, of which a signed-in user watches the
// last, which is past the first page of `listMarkets`.
const market = (ticker: string, title = ticker): MarketSummary => ({
  ticker,
  title,
  subtitle: null,
  eventTicker: null,
  seriesTicker: null,
  status: "active",
  closeTime: null,
  price: null,
  yesBid: null,
  yesAsk: null,
  volume: null,
  openInterest: null,
  result: null,
  settlementValue: null,
  settledAt: null,
  live: false,
});
const ALL = Array.from({ length: 130 }, (_, i) => market(`KX-${String(i).padStart(3, "0")}`, `Market ${i}`));
// Two markets whose stream's lease lapsed (getPrice says live: false), one of them closed.
ALL[0] = { ...ALL[0]!, status: "closed" };
const NOT_LIVE = new Set(["KX-000", "KX-001"]);
const WATCHED = ["KX-129"];

vi.mock("convex/react", () => ({
  useQuery: (query: unknown, args: Record<string, unknown> | "skip") => {
    if (args === "skip") return undefined;
    switch (getFunctionName(query as never)) {
      case "marketData:listMarkets": {
        const search = String(args.search ?? "").toLowerCase();
        return ALL.filter((m) => m.title.toLowerCase().includes(search) || m.ticker.toLowerCase().includes(search)).slice(
          0,
          Number(args.limit),
        );
      }
      case "watchlists:list":
        return WATCHED;
      case "watchlists:markets":
        return ALL.filter((m) => WATCHED.includes(m.ticker));
      case "marketData:getPrice":
        return { price: 0.5, changePercent24h: 0, live: !NOT_LIVE.has(String(args.ticker)) };
      default:
        return undefined;
    }
  },
  useMutation: () => Object.assign(() => Promise.resolve(true), { withOptimisticUpdate: (f: unknown) => f }),
}));
vi.mock("../auth", () => ({ useAccount: () => ({ status: "signedIn" }) }));

const rows = () => screen.queryAllByTestId("market-row").map((r) => r.dataset.ticker);

describe("MarketList", () => {
  it("says when the store holds more markets than the list shows", () => {
    render(<MarketList selected={null} onSelect={() => {}} />);
    expect(rows()).toHaveLength(100);
    expect(screen.getByTestId("markets-more").textContent).toContain("search to find the others");
  });

  it("shows every watched market under “Watchlist only”, also one past the list's limit", () => {
    render(<MarketList selected={null} onSelect={() => {}} />);
    expect(rows()).not.toContain("KX-129");
    fireEvent.click(screen.getByTestId("watch-filter"));
    expect(rows()).toEqual(["KX-129"]);
    expect(screen.queryByTestId("markets-more")).toBeNull();
    expect(screen.queryByTestId("markets-empty")).toBeNull();
  });

  it("applies the search to the watched markets", () => {
    vi.useFakeTimers();
    try {
      render(<MarketList selected={null} onSelect={() => {}} />);
      fireEvent.click(screen.getByTestId("watch-filter"));
      fireEvent.change(screen.getByTestId("market-search"), { target: { value: "market 12" } });
      act(() => vi.advanceTimersByTime(200));
      expect(rows()).toEqual(["KX-129"]);
      fireEvent.change(screen.getByTestId("market-search"), { target: { value: "market 5" } });
      act(() => vi.advanceTimersByTime(200));
      expect(rows()).toEqual([]);
      expect(screen.getByTestId("markets-empty")).toBeTruthy();
    } finally {
      vi.useRealTimers();
    }
  });
});

describe("MarketList rows", () => {
  it("tag an open market whose feed is lost as stale, never a closed one", () => {
    render(<MarketList selected={null} onSelect={() => {}} />);
    const stale = screen.queryAllByTestId("row-stale").map((tag) => tag.closest<HTMLElement>("[data-ticker]")?.dataset.ticker);
    expect(stale).toEqual(["KX-001"]);
  });
});

describe("matchesSearch", () => {
  it("matches ticker, event, title and subtitle, ignoring case", () => {
    const m = { ...market("KXFED-25", "Fed cuts?"), eventTicker: "KXFED", subtitle: "December" };
    for (const s of ["", "  ", "kxfed-25", "FED CUTS", "decem", "kxfed"]) expect(matchesSearch(m, s)).toBe(true);
    expect(matchesSearch(m, "cpi")).toBe(false);
  });
});
