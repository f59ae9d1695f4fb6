import { describe, expect, it, vi } from "vitest";
import { render, screen } from "@testing-library/react";
import { MarketView } from "./App";

// Every query fails as the store fails a ticker it refuses (longer than 256 characters, from
// `?market=`): `useQuery` throws the error; `useQueries` hands it back.
const refused = () => new Error("ArgumentValidationError: ticker: String should have at most 256 characters");
vi.mock("convex/react", () => ({
  useQuery: (_query: unknown, args: unknown) => {
    if (args === "skip") return undefined;
    throw refused();
  },
  useQueries: (queries: Record<string, unknown>) => Object.fromEntries(Object.keys(queries).map((k) => [k, refused()])),
  usePaginatedQuery: () => {
    throw refused();
  },
  useMutation: () => () => Promise.resolve(null),
}));

describe("MarketView", () => {
  it("contains a failing market to its panels instead of blanking the page", () => {
    vi.spyOn(console, "error").mockImplementation(() => {}); // React reports each caught error
    render(<MarketView ticker={"K".repeat(300)} />);
    const failed = screen.getAllByRole("alert").map((panel) => panel.querySelector("h2")?.textContent);
    expect(failed).toEqual(expect.arrayContaining(["Market", "Price", "Chart", "Order book", "Trades"]));
    expect(screen.getAllByText(/at most 256 characters/).length).toBeGreaterThan(0);
    expect(screen.getByTestId("market-view")).toBeTruthy();
  });
});
