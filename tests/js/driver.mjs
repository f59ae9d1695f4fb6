// A line-oriented driver for the official npm Convex clients, used by tests/e2e.
// stdin: one JSON command per line; stdout: one JSON event per line.
//   {"cmd":"subscribe","id":"s1","path":"counter:get","args":{...}}  -> {"event":"update","id","value"} | {"event":"error","id","message"}
//   {"cmd":"paginate","id":"p1","path","args","initialNumItems":n,"field":"seq"}
//       -> {"event":"paginated","id","status","results":[doc[field]...],"pages":[{cursor,continueCursor,isDone,n}...]}
//       (ConvexClient.onPaginatedUpdate_experimental; "pages" are the client's loaded pages)
//   {"cmd":"loadMore","id":"p1","numItems":n} -> {"event":"loadMore","id","ok"}
//   {"cmd":"unsubscribe","id":"s1"}
//   {"cmd":"mutation"|"query"|"action","via":"ws"|"http","rid":"r1","path","args"} -> {"event":"result","rid","value"} | {"event":"failed","rid","message","data"?}
//   {"cmd":"setAuth","tokens":["jwt1",...]}: ws.setAuth(fetchToken); each fetchToken call takes the
//       next queued token (the last one stays) and reports {"event":"fetchToken","forceRefreshToken","n","token"};
//       onChange reports {"event":"authChange","isAuthenticated"}
//   {"cmd":"pushTokens","tokens":[...]}: queue more tokens for fetchToken
//   {"cmd":"setHttpAuth","token":"jwt"}: ConvexHttpClient.setAuth(token)
//   {"cmd":"close"}
// Values cross as convex_encoded_json so bigints and bytes survive.
import { createInterface } from "node:readline";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { convexToJson, jsonToConvex, ConvexError } from "convex/values";
import { makeFunctionReference } from "convex/server";

const url = process.argv[2];
const adminKey = process.env.DRIVER_ADMIN_KEY;
const ws = new ConvexClient(url);
const http = new ConvexHttpClient(url);
if (adminKey) {
  ws.setAdminAuth(adminKey);
  http.setAdminAuth(adminKey);
}
const subs = new Map();
const paginated = new Map(); // id -> latest result (holds loadMore)
const tokens = [];
let fetches = 0;
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const ref = (path) => makeFunctionReference(path);

function failure(rid, e) {
  const ev = { event: "failed", rid, message: String(e && e.message ? e.message : e) };
  if (e instanceof ConvexError) ev.data = convexToJson(e.data);
  out(ev);
}

async function run(cmd) {
  const args = jsonToConvex(cmd.args ?? {});
  const client = cmd.via === "http" ? http : ws;
  const dbg = (m) => process.env.DRIVER_DEBUG && process.stderr.write(m + "\n");
  dbg("run " + cmd.rid);
  try {
    let value;
    if (cmd.cmd === "mutation") value = await client.mutation(ref(cmd.path), args);
    else if (cmd.cmd === "query") value = await client.query(ref(cmd.path), args);
    else value = await client.action(ref(cmd.path), args);
    dbg("done " + cmd.rid);
    out({ event: "result", rid: cmd.rid, value: convexToJson(value ?? null) });
  } catch (e) {
    failure(cmd.rid, e);
  }
}

// The pages the paginated client holds for `path`, in order: each page's start cursor and the
// continueCursor/isDone of its latest result (the client's internals, for the tests' checks).
function loadedPages(path) {
  const pages = [];
  for (const pq of ws.paginatedClient.paginatedQuerySet.values()) {
    if (pq.canonicalizedUdfPath !== path) continue;
    for (const key of pq.pageKeys) {
      const entry = pq.pageKeyToQuery.get(key);
      const r = ws.client.localQueryResultByToken(entry.queryToken);
      pages.push({
        cursor: entry.cursor ?? null,
        continueCursor: r?.continueCursor ?? null,
        isDone: r?.isDone ?? null,
        n: r?.page?.length ?? null,
      });
    }
  }
  return pages;
}

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  if (process.env.DRIVER_DEBUG) process.stderr.write("cmd " + line + "\n");
  if (cmd.cmd === "subscribe") {
    const unsub = ws.onUpdate(
      ref(cmd.path),
      jsonToConvex(cmd.args ?? {}),
      (value) => out({ event: "update", id: cmd.id, value: convexToJson(value ?? null) }),
      (err) => out({ event: "error", id: cmd.id, message: String(err.message) }),
    );
    subs.set(cmd.id, unsub);
  } else if (cmd.cmd === "paginate") {
    const args = jsonToConvex(cmd.args ?? {});
    const unsub = ws.onPaginatedUpdate_experimental(
      ref(cmd.path),
      args,
      { initialNumItems: cmd.initialNumItems },
      (result) => {
        paginated.set(cmd.id, result);
        out({
          event: "paginated",
          id: cmd.id,
          status: result.status,
          results: result.results.map((doc) => convexToJson(doc[cmd.field])),
          pages: loadedPages(cmd.path),
        });
      },
      (err) => out({ event: "error", id: cmd.id, message: String(err.message) }),
    );
    subs.set(cmd.id, unsub);
  } else if (cmd.cmd === "loadMore") {
    const ok = paginated.get(cmd.id)?.loadMore(cmd.numItems) ?? false;
    out({ event: "loadMore", id: cmd.id, ok });
  } else if (cmd.cmd === "unsubscribe") {
    subs.get(cmd.id)?.();
    subs.delete(cmd.id);
  } else if (cmd.cmd === "setAuth") {
    tokens.splice(0, tokens.length, ...cmd.tokens);
    ws.setAuth(
      async ({ forceRefreshToken }) => {
        const token = tokens.length > 1 ? tokens.shift() : (tokens[0] ?? null);
        out({ event: "fetchToken", forceRefreshToken, n: ++fetches, token });
        return token;
      },
      (isAuthenticated) => out({ event: "authChange", isAuthenticated }),
    );
  } else if (cmd.cmd === "pushTokens") {
    tokens.push(...cmd.tokens);
  } else if (cmd.cmd === "setHttpAuth") {
    http.setAuth(cmd.token);
  } else if (cmd.cmd === "close") {
    ws.close().then(() => {
      out({ event: "closed" });
      process.exit(0);
    });
  } else {
    run(cmd);
  }
});
rl.on("close", () => process.exit(0));
out({ event: "ready" });
