import { useConvexConnectionState } from "convex/react";

export type ConnectionPhase = "connecting" | "connected" | "reconnecting";

/** The phase the dashboard shows, from the client's connection state. */
export function connectionPhase(state: {
  isWebSocketConnected: boolean;
  hasEverConnected: boolean;
}): ConnectionPhase {
  if (state.isWebSocketConnected) return "connected";
  return state.hasEverConnected ? "reconnecting" : "connecting";
}

const LABEL: Record<ConnectionPhase, string> = {
  connecting: "Connecting…",
  connected: "Live",
  reconnecting: "Reconnecting…",
};

/** A pill showing whether the page is live, connecting or reconnecting to the store. */
export function ConnectionStatus() {
  const state = useConvexConnectionState();
  const phase = connectionPhase(state);
  const title =
    phase === "reconnecting"
      ? `Connection lost; retrying (${state.connectionRetries} attempt${state.connectionRetries === 1 ? "" : "s"}). Data shown may be stale.`
      : phase === "connected"
        ? `Connected (${state.connectionCount} connection${state.connectionCount === 1 ? "" : "s"} this session)`
        : "Opening the connection to the store";
  return (
    <span className={`conn conn-${phase}`} data-testid="connection" data-state={phase} title={title} role="status">
      <span className="conn-dot" aria-hidden="true" />
      {LABEL[phase]}
    </span>
  );
}
