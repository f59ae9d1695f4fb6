import { useQuery } from "convex/react";
import { api } from "../_generated/api";
import { formatAgo, formatCount, formatMs, formatRate } from "../format";
import { useNow } from "../hooks/useNow";
import type { StreamStatus } from "../types";
import { SkeletonRows } from "./Skeleton";

export type Health = "ok" | "warn" | "down";

/** Seconds without a message after which a streaming feed is shown as stale. */
export const STALE_AFTER_MS = 30_000;

/** How healthy a stream looks: its state, and whether messages are still arriving. */
export function streamHealth(s: Pick<StreamStatus, "state" | "lastMessageAt">, nowMs: number): Health {
  const state = s.state.toLowerCase();
  if (["stopped", "closed", "failed", "error", "stale"].includes(state)) return "down";
  if (state !== "streaming" && state !== "connected" && state !== "running") return "warn";
  if (s.lastMessageAt == null || nowMs - s.lastMessageAt > STALE_AFTER_MS) return "warn";
  return "ok";
}

/** The feed's health: per stream, its state, markets, messages/s, last message, reconnects, gaps, lag. */
export function StreamHealth() {
  const streams = useQuery(api.marketData.getStreamStatus, {});
  const now = useNow(1000);
  return <StreamHealthView streams={streams} now={now} />;
}

/** Streams as shown: `undefined` while loading. */
export function StreamHealthView({ streams, now }: { streams: readonly StreamStatus[] | undefined; now: number }) {

  let body;
  if (streams === undefined) {
    body = <SkeletonRows count={1} />;
  } else if (streams.length === 0) {
    body = (
      <div className="empty" data-testid="streams-empty">
        No stream is reporting
      </div>
    );
  } else {
    body = streams.map((s) => {
      const health = streamHealth(s, now);
      // Msg/s and lag are the worker's last report: a stopped or stale stream (its worker gone)
      // keeps them in the store, and they are not what the feed is doing now.
      const current = health !== "down";
      return (
        <div className={`stream stream-${health}`} key={s.streamId} data-testid="stream" data-health={health}>
          <div className="stream-title">
            <span className={`dot dot-${health}`} aria-hidden="true" />
            <span className="stream-id" title={s.streamId}>
              {s.streamId}
            </span>
            <span className="stream-state">{s.state}</span>
          </div>
          <dl className="stream-stats">
            <div>
              <dt>Markets</dt>
              <dd>{s.marketCount}</dd>
            </div>
            <div>
              <dt>Msg/s</dt>
              <dd data-testid="stream-rate">{current ? formatRate(s.messagesPerSecond) : "—"}</dd>
            </div>
            <div>
              <dt>Last msg</dt>
              <dd>{formatAgo(s.lastMessageAt, now)}</dd>
            </div>
            <div>
              <dt>Lag</dt>
              <dd data-testid="stream-lag">{current ? formatMs(s.lagMs) : "—"}</dd>
            </div>
            <div>
              <dt>Reconnects</dt>
              <dd>{formatCount(s.reconnects)}</dd>
            </div>
            <div>
              <dt>Gaps</dt>
              <dd>{formatCount(s.gaps)}</dd>
            </div>
          </dl>
        </div>
      );
    });
  }
  return (
    <section className="panel health" data-testid="stream-health" aria-label="Stream health">
      <header className="panel-head">
        <h2>Feed</h2>
      </header>
      {body}
    </section>
  );
}
