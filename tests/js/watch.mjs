// Subscribe with the official npm ConvexClient and print every value received: the npm twin of
// tests/e2e/convex_watch.py, with the same output, for bench/latency.py.
// Usage: node watch.mjs URL FUNCTION ARGS_JSON [ARGS_JSON ...]
// stdout: {"ready": true} once subscribed, then one {"i", "at", "v", "own"} line per value, where
// "at" is epoch ms at receipt with sub-millisecond precision (Date.now() would truncate it) and
// "own" is the client's own work on it: ms from the WebSocket's message event (the frame read
// and parsed by `ws`) to this callback, i.e. ConvexClient's JSON parse, sync state update and
// listener dispatch (null for a value that is not the first one a message delivered: the ones
// after it also waited for the printing of those before). The socket is the client's own `ws`
// (the version it bundles, pinned in package.json), subclassed only to note when each message
// event fires.
import { ConvexClient } from "convex/browser";
import { convexToJson, jsonToConvex } from "convex/values";
import { makeFunctionReference } from "convex/server";
import WebSocket from "ws";

let messageAt = 0;
let fresh = false; // no callback has run since the last message event
class TimedWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    // Registered before the client sets onmessage, so it runs first on every message.
    this.on("message", () => {
      messageAt = performance.now();
      fresh = true;
    });
  }
}

const [url, path, ...argsList] = process.argv.slice(2);
const client = new ConvexClient(url, { webSocketConstructor: TimedWebSocket });
const ref = makeFunctionReference(path);
const now = () => performance.timeOrigin + performance.now();
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

argsList.forEach((raw, i) => {
  client.onUpdate(
    ref,
    jsonToConvex(JSON.parse(raw)),
    (value) => {
      const at = performance.now();
      out({
        i,
        at: performance.timeOrigin + at,
        v: convexToJson(value ?? null),
        own: fresh ? Math.round((at - messageAt) * 1e4) / 1e4 : null,
      });
      fresh = false;
    },
    (err) => out({ i, at: now(), error: String(err.message) }),
  );
});
out({ ready: true });
process.on("SIGTERM", async () => {
  await client.close();
  process.exit(0);
});
