import { describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, within } from "@testing-library/react";
import { useFlash } from "../hooks/useFlash";
import type { MarketSummary, Orderbook, Price, StreamStatus, Trade } from "../types";
import { tailUpdate, toSeries } from "./CandleChart";
import { connectionPhase } from "./ConnectionStatus";
import { MarketListView, RowPriceView } from "./MarketList";
import { ladder, OrderbookView } from "./Orderbook";
import { PriceView } from "./PriceDisplay";
import { TradesView } from "./RecentTrades";
import { StreamHealthView, streamHealth } from "./StreamHealth";

const price: Price = {
  ticker: "KX-A",
  price: 0.52,
  changePercent24h: 4.1666,
  yesBid: 0.51,
  yesAsk: 0.53,
  volume: 12_345,
  openInterest: 2_000,
  updatedAt: Date.now(),
  live: true,
};

describe("PriceView", () => {
  it("shows a loading skeleton, then an empty state, then the price", () => {
    const { rerender, container } = render(<PriceView price={undefined} />);
    expect(screen.getByTestId("price").getAttribute("aria-busy")).toBe("true");
    rerender(<PriceView price={null} />);
    expect(screen.getByText("No price yet")).toBeTruthy();
    rerender(<PriceView price={null} unknown />);
    expect(screen.getByText("Unknown market")).toBeTruthy();
    rerender(<PriceView price={price} />);
    expect(screen.getByTestId("price-value").textContent).toBe("$0.52");
    expect(screen.getByTestId("price-change").textContent).toContain("+4.17%");
    expect(screen.getByTestId("price-change").className).toContain("change-up");
    expect(container.textContent).toContain("12.3K");
  });
  it("colours a fall red", () => {
    render(<PriceView price={{ ...price, changePercent24h: -1.5 }} />);
    const change = screen.getByTestId("price-change");
    expect(change.className).toContain("change-down");
    expect(change.textContent).toContain("-1.50%");
  });
  it("flashes the price up or down when it changes", () => {
    const { rerender } = render(<PriceView price={price} />);
    expect(screen.getByTestId("price-value").className).not.toMatch(/flash/);
    rerender(<PriceView price={{ ...price, price: 0.55 }} />);
    expect(screen.getByTestId("price-value").className).toMatch(/flash-up-0/);
    rerender(<PriceView price={{ ...price, price: 0.56 }} />);
    // Alternates so a second rise restarts the animation.
    expect(screen.getByTestId("price-value").className).toMatch(/flash-up-1/);
    rerender(<PriceView price={{ ...price, price: 0.4 }} />);
    expect(screen.getByTestId("price-value").className).toMatch(/flash-down-0/);
  });
  it("says when a market has no trade price", () => {
    render(<PriceView price={{ ...price, price: null }} />);
    expect(screen.getByTestId("price-value").textContent).toBe("No trades yet");
  });
  it("greys out a closed market's price", () => {
    render(<PriceView price={price} closed />);
    expect(screen.getByTestId("price").className).toContain("price-closed");
  });
  it("shows a price the store says is not live as stale", () => {
    const { rerender } = render(<PriceView price={price} />);
    expect(screen.queryByTestId("price-stale")).toBeNull();
    rerender(<PriceView price={{ ...price, live: false }} />);
    expect(screen.getByTestId("price").className).toContain("price-stale");
    expect(screen.getByTestId("price-stale").textContent).toContain("Stale: the feed is lost");
    expect(screen.getByTestId("price-value").textContent).toBe("$0.52"); // still shown, marked
  });
});

const book: Orderbook = {
  ticker: "KX-A",
  bids: [
    [0.51, 100],
    [0.5, 300],
  ],
  asks: [
    [0.53, 50],
    [0.54, 150],
    [0.55, 600],
  ],
  spread: 0.02,
  mid: 0.52,
  updatedAt: 0,
  live: true,
};

describe("ladder", () => {
  it("accumulates each side and scales against the deeper side", () => {
    const { bids, asks } = ladder(book);
    expect(bids.map((r) => r.total)).toEqual([100, 400]);
    expect(asks.map((r) => r.total)).toEqual([50, 200, 800]);
    expect(asks[2]!.depthPct).toBe(100);
    expect(bids[1]!.depthPct).toBe(50);
    expect(asks[0]!.depthPct).toBeCloseTo(6.25);
  });
  it("handles an empty book", () => {
    expect(ladder({ bids: [], asks: [] })).toEqual({ bids: [], asks: [] });
  });
});

describe("OrderbookView", () => {
  it("lists bids and asks side by side, best first, with the spread and mid", () => {
    render(<OrderbookView book={book} />);
    const asks = within(screen.getByTestId("asks")).getAllByTestId("ask-level");
    const bids = within(screen.getByTestId("bids")).getAllByTestId("bid-level");
    expect(asks.map((a) => a.dataset.price)).toEqual(["0.53", "0.54", "0.55"]);
    expect(bids.map((b) => b.dataset.price)).toEqual(["0.51", "0.5"]);
    expect(screen.getByTestId("spread").textContent).toContain("0.02");
    expect(screen.getByTestId("spread").textContent).toContain("Mid 0.52");
    const bar = bids[1]!.querySelector<HTMLElement>(".depth")!;
    expect(Number.parseFloat(bar.style.width)).toBe(50);
  });
  it("shows loading, no book, and a closed market's empty book", () => {
    const { rerender } = render(<OrderbookView book={undefined} />);
    expect(screen.getByTestId("orderbook").querySelector("[aria-busy=true]")).toBeTruthy();
    rerender(<OrderbookView book={null} />);
    expect(screen.getByTestId("book-empty").textContent).toBe("No order book yet");
    // The store withholds the book of a market whose feed is lost: say so, not "yet".
    rerender(<OrderbookView book={null} stale />);
    expect(screen.getByTestId("book-empty").textContent).toBe("The feed is lost: no live book");
    rerender(<OrderbookView book={null} unknown />);
    expect(screen.getByTestId("book-empty").textContent).toBe("Unknown market");
    rerender(<OrderbookView book={{ ...book, bids: [], asks: [] }} closed />);
    expect(screen.getByTestId("book-empty").textContent).toMatch(/closed/i);
  });
  it("keeps a deep book's sizes and totals short enough to read side by side", () => {
    const deep = { ...book, bids: [[0.45, 1_234_567.8], [0.44, 246_913.56]] as Array<[number, number]> };
    render(<OrderbookView book={deep} />);
    const bids = within(screen.getByTestId("bids")).getAllByTestId("bid-level");
    expect(bids[0]!.textContent).toBe("1.2M1.2M0.45");
    expect(bids[1]!.textContent).toBe("1.5M247K0.44");
  });
  it("says when one side is empty", () => {
    render(<OrderbookView book={{ ...book, asks: [], spread: null, mid: null }} />);
    expect(screen.getByText("No asks")).toBeTruthy();
    expect(screen.getByTestId("spread").textContent).toContain("—");
  });
  it("flashes a level whose size changed", () => {
    const { rerender } = render(<OrderbookView book={book} />);
    rerender(<OrderbookView book={{ ...book, bids: [[0.51, 40], [0.5, 300]] }} />);
    const best = screen.getAllByTestId("bid-level")[0]!;
    expect(best.querySelector(".level-size")!.className).toMatch(/flash-down/);
    expect(screen.getAllByTestId("bid-level")[1]!.querySelector(".level-size")!.className).not.toMatch(/flash/);
  });
});

const trade = (id: string, side: "buy" | "sell", p: number, t: number): Trade => ({
  id,
  ticker: "KX-A",
  side,
  price: p,
  size: 10,
  timestamp: t,
});

describe("TradesView", () => {
  it("colours sides and shows time; only later trades are highlighted as new", () => {
    const t0 = new Date().setHours(14, 3, 7, 0); // today: shown without a date
    const first = [trade("b", "sell", 0.49, t0), trade("a", "buy", 0.52, t0 - 1000)];
    const { rerender } = render(<TradesView ticker="KX-A" trades={first} />);
    const rows = screen.getAllByTestId("trade");
    expect(rows.map((r) => r.dataset.tradeId)).toEqual(["b", "a"]);
    expect(rows[0]!.className).toContain("trade-sell");
    expect(rows[0]!.textContent).toContain("SELL");
    expect(rows[0]!.textContent).toContain("14:03:07");
    expect(rows[1]!.className).toContain("trade-buy");
    expect(document.querySelectorAll(".trade-new")).toHaveLength(0);

    rerender(<TradesView ticker="KX-A" trades={[trade("c", "buy", 0.5, t0 + 1000), ...first]} />);
    const fresh = document.querySelectorAll<HTMLElement>(".trade-new");
    expect([...fresh].map((r) => r.dataset.tradeId)).toEqual(["c"]);
  });
  it("does not highlight older trades shown below (Load more) as new", () => {
    const first = [trade("c", "buy", 0.5, 3000), trade("b", "buy", 0.5, 2000)];
    const { rerender } = render(<TradesView ticker="KX-A" trades={first} />);
    rerender(<TradesView ticker="KX-A" trades={[...first, trade("a", "sell", 0.5, 1000), trade("0", "sell", 0.5, 0)]} />);
    expect(document.querySelectorAll(".trade-new")).toHaveLength(0);
    // A new trade and more old ones at once: only the new one is highlighted.
    rerender(
      <TradesView
        ticker="KX-A"
        trades={[trade("d", "buy", 0.5, 4000), ...first, trade("a", "sell", 0.5, 1000), trade("0", "sell", 0.5, 0), trade("-", "sell", 0.5, -1)]}
      />,
    );
    expect([...document.querySelectorAll<HTMLElement>(".trade-new")].map((r) => r.dataset.tradeId)).toEqual(["d"]);
  });
  it("does not highlight the first trades of another market", () => {
    const { rerender } = render(<TradesView ticker="KX-A" trades={[trade("a", "buy", 0.5, 0)]} />);
    rerender(<TradesView ticker="KX-B" trades={[trade("z", "buy", 0.5, 0)]} />);
    expect(document.querySelectorAll(".trade-new")).toHaveLength(0);
  });
  it("shows loading and empty states", () => {
    const { rerender } = render(<TradesView ticker="KX-A" trades={undefined} />);
    expect(screen.getByTestId("trades").querySelector("[aria-busy=true]")).toBeTruthy();
    rerender(<TradesView ticker="KX-A" trades={[]} />);
    expect(screen.getByTestId("trades-empty").textContent).toBe("No trades yet");
    rerender(<TradesView ticker="KX-A" trades={null} />);
    expect(screen.getByTestId("trades-empty").textContent).toBe("Unknown market");
  });
});

const markets: MarketSummary[] = [
  {
    ticker: "KX-A",
    title: "Will A happen?",
    subtitle: null,
    eventTicker: "KX",
    status: "active",
    closeTime: null,
    seriesTicker: null,
    price: 0.52,
    yesBid: 0.51,
    yesAsk: 0.53,
    volume: 10,
    openInterest: 5,
    result: null,
    settlementValue: null,
    settledAt: null,
    live: true,
  },
  {
    ticker: "KX-B",
    title: "Will B happen?",
    subtitle: null,
    eventTicker: "KX",
    status: "settled",
    closeTime: null,
    seriesTicker: null,
    price: 0.99,
    yesBid: null,
    yesAsk: null,
    volume: 10,
    openInterest: null,
    result: "yes",
    settlementValue: 1,
    settledAt: null,
    live: true,
  },
];

function StaticCell({ market }: { market: MarketSummary }) {
  return <RowPriceView price={market.price} change={market.price === 0.52 ? 1.5 : 0} />;
}

describe("MarketListView", () => {
  it("lists markets, marks the selected and the closed ones, and reports choices and searches", () => {
    const onSelect = vi.fn();
    const onSearch = vi.fn();
    render(
      <MarketListView
        markets={markets}
        search=""
        searched=""
        onSearch={onSearch}
        selected="KX-A"
        onSelect={onSelect}
        PriceCell={StaticCell}
      />,
    );
    const rows = screen.getAllByTestId("market-row");
    expect(rows.map((r) => r.dataset.ticker)).toEqual(["KX-A", "KX-B"]);
    expect(rows[0]!.getAttribute("aria-current")).toBe("true");
    expect(rows[1]!.className).toContain("market-row-closed");
    expect(rows[1]!.textContent).toContain("settled");
    expect(rows[0]!.textContent).toContain("0.52");
    fireEvent.click(rows[1]!);
    expect(onSelect).toHaveBeenCalledWith("KX-B");
    fireEvent.change(screen.getByTestId("market-search"), { target: { value: "will" } });
    expect(onSearch).toHaveBeenCalledWith("will");
  });
  it("says when nothing matches, and when there are no markets at all", () => {
    const props = { search: "", onSearch: () => {}, selected: null, onSelect: () => {}, PriceCell: StaticCell };
    const { rerender } = render(<MarketListView {...props} markets={[]} searched="zzz" />);
    expect(screen.getByTestId("markets-empty").textContent).toContain("zzz");
    rerender(<MarketListView {...props} markets={[]} searched="" />);
    expect(screen.getByTestId("markets-empty").textContent).toMatch(/waiting for the feed/);
  });
});

const stream: StreamStatus = {
  streamId: "kalshi-stream",
  state: "streaming",
  markets: ["KX-A", "KX-B"],
  marketCount: 2,
  messagesPerSecond: 812.4,
  lastMessageAt: 1_000_000,
  reconnects: 1,
  gaps: 0,
  lagMs: 3.2,
  updatedAt: 1_000_000,
  live: true,
};

describe("StreamHealthView", () => {
  it("shows each stream's figures and health", () => {
    render(<StreamHealthView streams={[stream]} now={1_000_500} />);
    const row = screen.getByTestId("stream");
    expect(row.dataset.health).toBe("ok");
    expect(row.textContent).toContain("812");
    expect(row.textContent).toContain("3 ms");
    expect(row.textContent).toContain("now");
  });
  it("rates a silent, reconnecting or stopped stream", () => {
    expect(streamHealth(stream, 1_000_000 + 60_000)).toBe("warn");
    expect(streamHealth({ ...stream, state: "reconnecting" }, 1_000_000)).toBe("warn");
    expect(streamHealth({ ...stream, state: "stopped" }, 1_000_000)).toBe("down");
  });
  it("does not show a stale or stopped stream's last rate and lag as current", () => {
    const { rerender } = render(<StreamHealthView streams={[{ ...stream, state: "stale", live: false }]} now={1_000_500} />);
    expect(screen.getByTestId("stream").dataset.health).toBe("down");
    expect(screen.getByTestId("stream").textContent).not.toMatch(/812|3 ms/);
    expect(screen.getByTestId("stream-rate").textContent).toBe("—");
    expect(screen.getByTestId("stream-lag").textContent).toBe("—");
    rerender(<StreamHealthView streams={[{ ...stream, state: "stopped" }]} now={1_000_500} />);
    expect(screen.getByTestId("stream-rate").textContent).toBe("—");
    rerender(<StreamHealthView streams={[stream]} now={1_000_500} />);
    expect(screen.getByTestId("stream-rate").textContent).toBe("812.4");
    expect(screen.getByTestId("stream-lag").textContent).toBe("3 ms");
  });
  it("shows an empty state when no stream reports", () => {
    render(<StreamHealthView streams={[]} now={0} />);
    expect(screen.getByTestId("streams-empty")).toBeTruthy();
  });
});

describe("connectionPhase", () => {
  it("tells connecting, connected and reconnecting apart", () => {
    expect(connectionPhase({ isWebSocketConnected: false, hasEverConnected: false })).toBe("connecting");
    expect(connectionPhase({ isWebSocketConnected: true, hasEverConnected: true })).toBe("connected");
    expect(connectionPhase({ isWebSocketConnected: false, hasEverConnected: true })).toBe("reconnecting");
  });
});

describe("toSeries", () => {
  it("sorts, dedupes and converts to seconds shifted to local time", () => {
    const c = (start: number, open: number, close: number) => ({ start, open, high: 1, low: 0, close, volume: 5, trades: 1 });
    const out = toSeries([c(120_000, 0.5, 0.6), c(60_000, 0.6, 0.4), c(120_000, 0.5, 0.7)], 60);
    expect(out.candles.map((x) => x.time)).toEqual([60 - 3600, 120 - 3600]);
    expect(out.candles[1]!.close).toBe(0.7);
    expect(out.volumes[0]!.color).toMatch(/^#f2545b/);
    expect(out.volumes[1]!.color).toMatch(/^#2fd18b/);
  });
});

function FlashProbe({ value }: { value: unknown }) {
  const flash = useFlash(value);
  return <span data-testid="probe" className={flash.className} onAnimationEnd={flash.onAnimationEnd} />;
}

describe("useFlash", () => {
  it("does not flash the first value nor an unchanged one; flashes non-numbers neutrally", () => {
    const { rerender } = render(<FlashProbe value="a" />);
    expect(screen.getByTestId("probe").className).toBe("");
    rerender(<FlashProbe value="a" />);
    expect(screen.getByTestId("probe").className).toBe("");
    rerender(<FlashProbe value="b" />);
    expect(screen.getByTestId("probe").className).toBe("flash-0");
  });
  it("drops the class when the animation ends, and flashes again on the next change", () => {
    const { rerender } = render(<FlashProbe value={1} />);
    rerender(<FlashProbe value={2} />);
    expect(screen.getByTestId("probe").className).toBe("flash-up-0");
    // jsdom has no AnimationEvent, so React listens for the prefixed name there.
    fireEvent(screen.getByTestId("probe"), new Event("webkitAnimationEnd", { bubbles: true }));
    expect(screen.getByTestId("probe").className).toBe("");
    rerender(<FlashProbe value={3} />);
    expect(screen.getByTestId("probe").className).toBe("flash-up-1");
  });
});

describe("tailUpdate", () => {
  const bar = (time: number, close: number) => ({ time: time as never, open: 0.5, high: 0.6, low: 0.4, close });
  const prev = [bar(60, 0.5), bar(120, 0.51)];
  it("updates only the last bar when a trade moves it", () => {
    expect(tailUpdate(prev, [bar(60, 0.5), bar(120, 0.55)])).toEqual([bar(120, 0.55)]);
  });
  it("appends a new bar", () => {
    expect(tailUpdate(prev, [...prev, bar(180, 0.52)])).toEqual([bar(180, 0.52)]);
  });
  it("does nothing when nothing changed", () => {
    expect(tailUpdate(prev, [...prev])).toEqual([]);
  });
  it("asks for a full redraw on any other change", () => {
    expect(tailUpdate([], prev)).toBeNull();
    expect(tailUpdate(prev, [bar(60, 0.49), bar(120, 0.51)])).toBeNull();
    expect(tailUpdate(prev, [bar(120, 0.51), bar(180, 0.5)])).toBeNull();
    expect(tailUpdate(prev, [bar(60, 0.5)])).toBeNull();
    expect(tailUpdate(prev, [...prev, bar(180, 0.5), bar(240, 0.5)])).toBeNull();
  });
});

describe("RowPriceView", () => {
  it("tags a market whose price is not live as stale", () => {
    const { rerender } = render(<RowPriceView price={0.52} change={1} />);
    expect(screen.queryByTestId("row-stale")).toBeNull();
    rerender(<RowPriceView price={0.52} change={1} stale />);
    expect(screen.getByTestId("row-stale").textContent).toBe("stale");
  });
});
