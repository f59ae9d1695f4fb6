import { describe, expect, it, vi } from "vitest";
import { render, screen } from "@testing-library/react";
import { MarketView } from "./App";

// The store played by fakes of the client's hooks. "refused": every query fails as the store
// fails a ticker it refuses (longer than 256 characters, from `?market=`): `useQuery` throws
// the error, `useQueries` hands it back. "unknown": the store has no such market.
let mode: "refused" | "unknown" = "refused";
const refused = () => new Error("ArgumentValidationError: ticker: String should have at most 256 characters");
vi.mock("convex/react", () => ({
  useQuery: (_query: unknown, args: unknown) => {
    if (args === "skip") return undefined;
    if (mode === "unknown") return null;
    throw refused();
  },
  useQueries: (queries: Record<string, unknown>) =>
    Object.fromEntries(Object.keys(queries).map((k) => [k, mode === "unknown" ? null : refused()])),
  usePaginatedQuery: () => {
    if (mode === "unknown") return { results: [], status: "Exhausted", loadMore: () => {} };
    throw refused();
  },
  useMutation: () => () => Promise.resolve(null),
}));

describe("MarketView", () => {
  it("contains a failing market to its panels instead of blanking the page", () => {
    mode = "refused";
    vi.spyOn(console, "error").mockImplementation(() => {}); // React reports each caught error
    render(<MarketView ticker={"K".repeat(300)} />);
    const failed = screen.getAllByRole("alert").map((panel) => panel.querySelector("h2")?.textContent);
    expect(failed).toEqual(expect.arrayContaining(["Market", "Price", "Chart", "Order book", "Trades"]));
    expect(screen.getAllByText(/at most 256 characters/).length).toBeGreaterThan(0);
    expect(screen.getByTestId("market-view")).toBeTruthy();
  });

  it("says in every panel that a market the store does not know is unknown", () => {
    mode = "unknown";
    render(<MarketView ticker="KX-NOPE" />);
    for (const id of ["price", "orderbook", "trades"]) {
      expect(screen.getByTestId(id).textContent, id).toContain("Unknown market");
      expect(screen.getByTestId(id).textContent, id).not.toMatch(/yet/);
    }
  });
});
