import { describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, within } from "@testing-library/react";
import type { OptimisticLocalStore } from "convex/browser";
import { type Account, tokenFetcher } from "../auth";
import type { MarketSummary } from "../types";
import { AccountView } from "./Account";
import { type Alert, AlertsView } from "./Alerts";
import { MarketListView } from "./MarketList";
import { LoadMore, tradeWindow } from "./TradeHistory";
import { optimisticWatch, WatchStarView } from "./Watchlist";

function market(ticker: string): MarketSummary {
  return {
    ticker,
    title: ticker,
    subtitle: null,
    eventTicker: null,
    status: "active",
    closeTime: null,
    seriesTicker: null,
    price: 0.5,
    yesBid: 0.49,
    yesAsk: 0.51,
    volume: 1,
    openInterest: 1,
    result: null,
    settlementValue: null,
    settledAt: null,
    live: true,
  };
}

function NoPrice() {
  return <span />;
}

/** A local store holding one query result, as the client's optimistic layer does. */
function fakeStore(initial: string[] | undefined) {
  let value = initial;
  const store = {
    getQuery: () => value,
    setQuery: (_q: unknown, _a: unknown, v: string[]) => {
      value = v;
    },
  } as unknown as OptimisticLocalStore;
  return { store, value: () => value };
}

describe("optimisticWatch", () => {
  it("adds and removes the ticker in the cached watchlist, sorted and without duplicates", () => {
    const s = fakeStore(["B", "D"]);
    optimisticWatch(true)(s.store, { ticker: "C" });
    expect(s.value()).toEqual(["B", "C", "D"]);
    optimisticWatch(true)(s.store, { ticker: "C" });
    expect(s.value()).toEqual(["B", "C", "D"]);
    optimisticWatch(false)(s.store, { ticker: "B" });
    expect(s.value()).toEqual(["C", "D"]);
  });
  it("leaves a watchlist that is not loaded alone", () => {
    const s = fakeStore(undefined);
    optimisticWatch(true)(s.store, { ticker: "C" });
    expect(s.value()).toBeUndefined();
  });
});

describe("WatchStarView", () => {
  it("shows the state, reports clicks and shows an error", () => {
    const onToggle = vi.fn();
    const { rerender } = render(<WatchStarView ticker="KX-A" watched={false} error={null} onToggle={onToggle} />);
    const star = screen.getByTestId("star");
    expect(star.getAttribute("aria-pressed")).toBe("false");
    expect(star.textContent).toBe("☆");
    fireEvent.click(star);
    expect(onToggle).toHaveBeenCalledOnce();
    rerender(<WatchStarView ticker="KX-A" watched error="no market" onToggle={onToggle} />);
    expect(star.getAttribute("aria-pressed")).toBe("true");
    expect(star.textContent).toBe("★");
    expect(star.dataset.error).toBe("no market");
  });
});

describe("MarketListView with a watchlist", () => {
  it("puts a star on each row only when signed in, beside (not inside) the row button", () => {
    const Star = ({ ticker, watched }: { ticker: string; watched: boolean }) => (
      <WatchStarView ticker={ticker} watched={watched} error={null} onToggle={() => {}} />
    );
    const props = {
      markets: [market("KX-A"), market("KX-B")],
      search: "",
      searched: "",
      onSearch: () => {},
      selected: null,
      onSelect: () => {},
      PriceCell: NoPrice,
      Star,
    };
    const { rerender } = render(<MarketListView {...props} watched={null} />);
    expect(screen.queryAllByTestId("star")).toHaveLength(0);
    rerender(<MarketListView {...props} watched={new Set(["KX-B"])} toolbar={<span data-testid="tb" />} />);
    const stars = screen.getAllByTestId("star");
    expect(stars.map((s) => s.getAttribute("aria-pressed"))).toEqual(["false", "true"]);
    expect(stars[0]?.closest("[data-testid=market-row]")).toBeNull();
    expect(screen.getByTestId("tb")).toBeTruthy();
    rerender(<MarketListView {...props} markets={[]} watched={new Set()} emptyText="No market in your watchlist" />);
    expect(screen.getByTestId("markets-empty").textContent).toBe("No market in your watchlist");
  });
});

const account: Account = {
  devConfig: { issuer: "i", applicationID: "a", tokenUrl: "t", signInUrl: "s" },
  status: "signedOut",
  name: null,
  error: null,
  signIn: () => {},
  signOut: () => {},
};

describe("AccountView", () => {
  it("signs in with a name when the store has the dev sign-in", () => {
    const signIn = vi.fn();
    render(<AccountView account={{ ...account, signIn }} />);
    const input = screen.getByTestId("sign-in-name") as HTMLInputElement;
    expect(input.placeholder).toBe("Your name");
    fireEvent.change(input, { target: { value: "Ada" } });
    fireEvent.click(screen.getByTestId("sign-in"));
    expect(signIn).toHaveBeenCalledWith("Ada");
  });
  it("asks for a token with a configured provider, and shows a refusal", () => {
    render(<AccountView account={{ ...account, devConfig: null, error: "The store refused the sign-in" }} />);
    expect((screen.getByTestId("sign-in-name") as HTMLInputElement).placeholder).toBe("Paste a token");
    expect(screen.getByRole("alert").textContent).toContain("refused");
  });
  it("shows who is signed in and signs out", () => {
    const signOut = vi.fn();
    render(<AccountView account={{ ...account, status: "signedIn", name: "Ada", signOut }} />);
    expect(screen.getByTestId("account-name").textContent).toBe("Ada");
    fireEvent.click(screen.getByTestId("sign-out"));
    expect(signOut).toHaveBeenCalledOnce();
  });
});

describe("tokenFetcher", () => {
  it("reuses a token with time left, and asks again when forced or near expiry", async () => {
    let now = 1_000_000;
    let n = 0;
    const issue = vi.fn(async () => ({ token: `t${++n}`, expiresAt: now + 120_000 }));
    const fetch = tokenFetcher(issue, () => now);
    expect(await fetch({ forceRefreshToken: false })).toBe("t1");
    expect(await fetch({ forceRefreshToken: false })).toBe("t1");
    expect(await fetch({ forceRefreshToken: true })).toBe("t2");
    now += 90_000; // less than a minute left
    expect(await fetch({ forceRefreshToken: false })).toBe("t3");
  });
  it("answers null when the issuer fails, which signs the client out", async () => {
    const fetch = tokenFetcher(async () => {
      throw new Error("down");
    });
    expect(await fetch({ forceRefreshToken: false })).toBeNull();
  });
});

const armed: Alert = {
  id: "a1",
  ticker: "KX-A",
  above: 0.6,
  below: null,
  createdAt: 1,
  triggeredAt: null,
  triggerPrice: null,
  delivery: null,
};

describe("AlertsView", () => {
  it("creates an alert from the levels typed, and refuses none", () => {
    const onCreate = vi.fn();
    render(<AlertsView ticker="KX-A" alerts={[]} error={null} onCreate={onCreate} onRemove={() => {}} />);
    fireEvent.click(screen.getByTestId("alert-create"));
    expect(onCreate).not.toHaveBeenCalled();
    expect(screen.getByTestId("alert-error").textContent).toContain("price level");
    fireEvent.change(screen.getByTestId("alert-below"), { target: { value: "0.35" } });
    fireEvent.click(screen.getByTestId("alert-create"));
    expect(onCreate).toHaveBeenCalledWith(null, 0.35);
  });
  it("lists this market's armed alerts and every fired one, and removes them", () => {
    const onRemove = vi.fn();
    const fired: Alert = { ...armed, id: "f1", ticker: "KX-B", triggeredAt: 5, triggerPrice: 0.61 };
    const other: Alert = { ...armed, id: "a2", ticker: "KX-B" };
    render(
      <AlertsView ticker="KX-A" alerts={[fired, other, armed]} error="already past" onCreate={() => {}} onRemove={onRemove} />,
    );
    expect(screen.getAllByTestId("armed-alert").map((e) => e.dataset.alertId)).toEqual(["a1"]);
    const firedRow = screen.getByTestId("fired-alert");
    expect(firedRow.dataset.ticker).toBe("KX-B");
    expect(firedRow.textContent).toContain("0.61");
    expect(screen.getByTestId("alert-error").textContent).toBe("already past");
    fireEvent.click(within(firedRow).getByRole("button"));
    expect(onRemove).toHaveBeenCalledWith("f1");
  });
  it("says when nothing fired yet", () => {
    render(<AlertsView ticker="KX-A" alerts={[armed]} error={null} onCreate={() => {}} onRemove={() => {}} />);
    expect(screen.getByTestId("fired-empty")).toBeTruthy();
  });
});

describe("LoadMore", () => {
  it("offers more while there is more, waits while loading, and says when all are loaded", () => {
    const onLoadMore = vi.fn();
    const { rerender, container } = render(<LoadMore status="LoadingFirstPage" count={0} onLoadMore={onLoadMore} />);
    expect(container.textContent).toBe("");
    rerender(<LoadMore status="CanLoadMore" count={30} onLoadMore={onLoadMore} />);
    fireEvent.click(screen.getByTestId("load-more"));
    expect(onLoadMore).toHaveBeenCalledOnce();
    rerender(<LoadMore status="LoadingMore" count={30} onLoadMore={onLoadMore} />);
    expect((screen.getByTestId("load-more") as HTMLButtonElement).disabled).toBe(true);
    rerender(<LoadMore status="Exhausted" count={42} onLoadMore={onLoadMore} />);
    expect(screen.getByTestId("trades-exhausted").textContent).toBe("All 42 trades");
  });
});

describe("tradeWindow", () => {
  const trades = Array.from({ length: 75 }, (_, i) => i);
  it("draws the newest rows only and offers the loaded ones it hides", () => {
    expect(tradeWindow(trades, "Exhausted", 30)).toEqual({
      rows: trades.slice(0, 30),
      status: "CanLoadMore",
      count: 30,
    });
  });
  it("says what the store says once every loaded row is drawn", () => {
    expect(tradeWindow(trades, "Exhausted", 90)).toEqual({ rows: trades, status: "Exhausted", count: 75 });
    expect(tradeWindow(trades, "CanLoadMore", 75).status).toBe("CanLoadMore");
    expect(tradeWindow(trades, "LoadingMore", 30).status).toBe("LoadingMore");
  });
});
