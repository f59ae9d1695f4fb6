import { afterEach, describe, expect, it } from "vitest";
import { cleanup, render, screen } from "@testing-library/react";
import { ConvexProvider, ConvexReactClient } from "convex/react";
import { App } from "./App";

// The real official client, pointed at a port where nothing listens: the whole screen must
// render its loading states and say it is connecting, without throwing.
let client: ConvexReactClient | null = null;

afterEach(async () => {
  cleanup(); // unmount before the client closes: unmounting unsubscribes through it
  await client?.close();
  client = null;
});

describe("App with the official client and no store", () => {
  it("renders loading states and a connecting pill", () => {
    client = new ConvexReactClient("http://127.0.0.1:9", { unsavedChangesWarning: false });
    render(
      <ConvexProvider client={client}>
        <App storeUrl="http://127.0.0.1:9" initialTicker="KX-A" />
      </ConvexProvider>,
    );
    const pill = screen.getByTestId("connection");
    expect(pill.dataset.state).toBe("connecting");
    expect(pill.textContent).toContain("Connecting");
    expect(screen.getByTestId("market-view").dataset.ticker).toBe("KX-A");
    expect(screen.getByTestId("price").getAttribute("aria-busy")).toBe("true");
    expect(screen.getByTestId("orderbook").querySelector("[aria-busy=true]")).toBeTruthy();
    expect(screen.getByTestId("trades").querySelector("[aria-busy=true]")).toBeTruthy();
    expect(screen.getByTestId("stream-health").querySelector("[aria-busy=true]")).toBeTruthy();
    expect(screen.getByText("127.0.0.1:9")).toBeTruthy();
  });
});
