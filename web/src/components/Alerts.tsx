import { type FormEvent, useState } from "react";
import { useMutation, useQuery } from "convex/react";
import type { FunctionReturnType } from "convex/server";
import { api } from "../_generated/api";
import { useAccount } from "../auth";
import { formatPrice, formatTime } from "../format";

/** One of `alerts:list`'s results (the generated type). */
export type Alert = FunctionReturnType<typeof api.alerts.list>[number];

/** Price alerts of the signed-in user: create one on this market, see those that fired (live). */
export function AlertsPanel({ ticker }: { ticker: string }) {
  const { status } = useAccount();
  const alerts = useQuery(api.alerts.list, status === "signedIn" ? {} : "skip");
  const create = useMutation(api.alerts.create);
  const remove = useMutation(api.alerts.remove);
  const [error, setError] = useState<string | null>(null);
  if (status !== "signedIn") {
    return (
      <section className="panel alerts" data-testid="alerts" aria-label="Price alerts">
        <header className="panel-head">
          <h2>Alerts</h2>
        </header>
        <div className="empty">Sign in to set price alerts</div>
      </section>
    );
  }
  const onCreate = (above: number | null, below: number | null) => {
    setError(null);
    create({ ticker, above, below }).catch((e: unknown) => {
      const data = (e as { data?: { message?: string } }).data;
      setError(data?.message ?? (e instanceof Error ? e.message : String(e)));
    });
  };
  return (
    <AlertsView
      ticker={ticker}
      alerts={alerts}
      error={error}
      onCreate={onCreate}
      onRemove={(id) => void remove({ id }).catch(() => {})}
    />
  );
}

function level(a: Alert): string {
  const parts = [];
  if (a.above !== null) parts.push(`≥ ${formatPrice(a.above)}`);
  if (a.below !== null) parts.push(`≤ ${formatPrice(a.below)}`);
  return parts.join(" or ");
}

function parseLevel(text: string): number | null | "bad" {
  if (!text.trim()) return null;
  const v = Number(text);
  return Number.isFinite(v) ? v : "bad";
}

export function AlertsView({
  ticker,
  alerts,
  error,
  onCreate,
  onRemove,
}: {
  ticker: string;
  alerts: readonly Alert[] | undefined;
  error: string | null;
  onCreate: (above: number | null, below: number | null) => void;
  onRemove: (id: string) => void;
}) {
  const [above, setAbove] = useState("");
  const [below, setBelow] = useState("");
  const [local, setLocal] = useState<string | null>(null);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const a = parseLevel(above);
    const b = parseLevel(below);
    if (a === "bad" || b === "bad" || (a === null && b === null)) {
      setLocal("Give a price level (in dollars, e.g. 0.55)");
      return;
    }
    setLocal(null);
    onCreate(a, b);
  };
  const fired = (alerts ?? []).filter((a) => a.triggeredAt !== null);
  const armed = (alerts ?? []).filter((a) => a.triggeredAt === null && a.ticker === ticker);
  const shownError = local ?? error;
  return (
    <section className="panel alerts" data-testid="alerts" aria-label="Price alerts">
      <header className="panel-head">
        <h2>Alerts</h2>
        <span className="panel-sub">{ticker}</span>
      </header>
      <form className="alert-form" onSubmit={submit}>
        <input
          inputMode="decimal"
          placeholder="above $"
          aria-label="Alert when the price rises to"
          value={above}
          onChange={(e) => setAbove(e.target.value)}
          data-testid="alert-above"
        />
        <input
          inputMode="decimal"
          placeholder="below $"
          aria-label="Alert when the price falls to"
          value={below}
          onChange={(e) => setBelow(e.target.value)}
          data-testid="alert-below"
        />
        <button type="submit" data-testid="alert-create">
          Create alert
        </button>
      </form>
      {shownError ? (
        <div className="alert-error" role="alert" data-testid="alert-error">
          {shownError}
        </div>
      ) : null}
      {armed.length ? (
        <ul className="alert-list" aria-label="Armed alerts">
          {armed.map((a) => (
            <li key={a.id} data-testid="armed-alert" data-alert-id={a.id}>
              <span>{level(a)}</span>
              <button type="button" className="link" onClick={() => onRemove(a.id)} aria-label="Remove alert">
                ✕
              </button>
            </li>
          ))}
        </ul>
      ) : null}
      <h3 className="alert-subhead">Fired</h3>
      {alerts === undefined ? (
        <div className="empty" aria-busy="true">
          Loading…
        </div>
      ) : fired.length === 0 ? (
        <div className="empty" data-testid="fired-empty">
          None yet
        </div>
      ) : (
        <ul className="alert-list" aria-label="Fired alerts">
          {fired.map((a) => (
            <li key={a.id} className="alert-fired" data-testid="fired-alert" data-alert-id={a.id} data-ticker={a.ticker}>
              <span className="alert-ticker">{a.ticker}</span>
              <span>
                {level(a)} hit at {formatPrice(a.triggerPrice)}
              </span>
              <time>{formatTime(a.triggeredAt ?? 0)}</time>
              <button type="button" className="link" onClick={() => onRemove(a.id)} aria-label="Dismiss alert">
                ✕
              </button>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
