// One official npm ConvexClient sending mutations at a paced rate (or as fast as its window
// allows) without awaiting each: bench/store_write_path.py --pipelined runs it.
//   node pace.mjs URL PATH RATE SECONDS WINDOW
// RATE 0: as fast as it can, WINDOW mutations in flight at most. Else RATE per second; a
// mutation whose turn comes while WINDOW are in flight waits (it is late, not dropped).
// Latency: from the mutation's turn (its paced send time) to the client resolving it, so a
// store that falls behind shows it. The arguments are {seq}; the function must return seq.
// Prints one JSON line: sent, acked, failed, seconds, inOrder, latency p50/p99/max (ms).
import { ConvexClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";

const [url, path, rateArg, secondsArg, windowArg] = process.argv.slice(2);
const rate = Number(rateArg);
const seconds = Number(secondsArg);
const windowSize = Number(windowArg);
const client = new ConvexClient(url);
const ref = makeFunctionReference(path);

let seq = 0;
let inFlight = 0;
let acked = 0;
let failed = 0;
let lastResolved = -1;
let inOrder = true;
const latencies = [];

function send(turn) {
  const mine = seq++;
  inFlight++;
  return client.mutation(ref, { seq: mine }).then(
    (value) => {
      inFlight--;
      acked++;
      latencies.push(performance.now() - turn);
      if (value !== mine || mine < lastResolved) inOrder = false;
      lastResolved = mine;
    },
    () => {
      inFlight--;
      failed++;
    },
  );
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Warm up: connect, and a few round trips one at a time.
for (let i = 0; i < 50; i++) await send(performance.now());
latencies.length = 0;
acked = 0;

const start = performance.now();
const end = start + seconds * 1000;
const pending = [];
let next = start; // the next mutation's turn (paced mode)
while (performance.now() < end) {
  if (rate > 0) {
    while (next <= performance.now() && inFlight < windowSize) {
      pending.push(send(next));
      next += 1000 / rate;
    }
    await sleep(Math.max(0, Math.min(5, next - performance.now())));
  } else {
    while (inFlight < windowSize) pending.push(send(performance.now()));
    await sleep(0);
  }
}
const sendingEnded = performance.now();
await Promise.race([Promise.allSettled(pending), sleep(30000)]);
const elapsed = (performance.now() - start) / 1000;
latencies.sort((a, b) => a - b);
const q = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : null);
const line = JSON.stringify({
  sent: seq - 50,
  acked,
  failed,
  seconds: elapsed,
  sendingSeconds: (sendingEnded - start) / 1000,
  unanswered: inFlight,
  inOrder,
  p50: q(0.5),
  p99: q(0.99),
  max: latencies.length ? latencies[latencies.length - 1] : null,
});
await client.close();
process.stdout.write(line + "\n", () => process.exit(0));
