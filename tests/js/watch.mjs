// Subscribe with the official npm ConvexClient and print every value received: the npm twin of
// tests/e2e/convex_watch.py, with the same output, for bench/latency.py.
// Usage: node watch.mjs URL FUNCTION ARGS_JSON [ARGS_JSON ...]
// stdout: {"ready": true} once subscribed, then one {"i", "at", "v"} line per value, where
// "at" is epoch ms at receipt with sub-millisecond precision (Date.now() would truncate it).
import { ConvexClient } from "convex/browser";
import { convexToJson, jsonToConvex } from "convex/values";
import { makeFunctionReference } from "convex/server";

const [url, path, ...argsList] = process.argv.slice(2);
const client = new ConvexClient(url);
const ref = makeFunctionReference(path);
const now = () => performance.timeOrigin + performance.now();
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

argsList.forEach((raw, i) => {
  client.onUpdate(
    ref,
    jsonToConvex(JSON.parse(raw)),
    (value) => out({ i, at: now(), v: convexToJson(value ?? null) }),
    (err) => out({ i, at: now(), error: String(err.message) }),
  );
});
out({ ready: true });
process.on("SIGTERM", async () => {
  await client.close();
  process.exit(0);
});
