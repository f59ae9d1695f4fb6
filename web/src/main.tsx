import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { ConvexProvider, ConvexReactClient } from "convex/react";
import { App } from "./App";
import { initialMarket, resolveStoreUrl } from "./config";
import "./styles.css";

const root = createRoot(document.getElementById("root")!);

let storeUrl: string | null = null;
try {
  storeUrl = resolveStoreUrl(window.location, import.meta.env.VITE_MARKETPULSE_STORE as string | undefined);
} catch (err) {
  root.render(
    <div className="fatal" role="alert">
      <h1>marketpulse</h1>
      <p>Cannot use this store address: {err instanceof Error ? err.message : String(err)}</p>
      <p className="muted">Use ?store=http://host:port or leave it out to use this page's server.</p>
    </div>,
  );
}

if (storeUrl !== null) {
  // The official client owns the socket, reconnection and the query set; this app only reads.
  const client = new ConvexReactClient(storeUrl, { unsavedChangesWarning: false });
  root.render(
    <StrictMode>
      <ConvexProvider client={client}>
        <App storeUrl={storeUrl} initialTicker={initialMarket(window.location)} />
      </ConvexProvider>
    </StrictMode>,
  );
}
