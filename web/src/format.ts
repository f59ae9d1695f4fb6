/**
 * Number and time formatting for the dashboard. Prices are YES dollars (0–1 on Kalshi),
 * sizes are contracts, timestamps are epoch milliseconds, as the marketData functions return.
 */

const DASH = "—";

function isNum(value: number | null | undefined): value is number {
  return typeof value === "number" && Number.isFinite(value);
}

/**
 * A dollar price: two decimals, more only when the price has sub-cent precision
 * (Kalshi's fractional-tick markets), at most four.
 */
export function formatPrice(value: number | null | undefined): string {
  if (!isNum(value)) return DASH;
  const cents = Math.round(value * 100);
  if (Math.abs(value * 100 - cents) < 1e-9) return value.toFixed(2);
  // Four places, less the trailing zeros past the second (a price that rounds to whole cents at
  // four places keeps two: 0.99999 is "1.00", not "1.").
  return value.toFixed(4).replace(/0{1,2}$/, "");
}

/**
 * How many decimals a column of prices needs so that every price is exact and all align:
 * 2 for whole cents, up to 4 for sub-cent ticks.
 */
export function priceDecimals(values: Iterable<number | null | undefined>): number {
  let decimals = 2;
  for (const v of values) {
    if (!isNum(v)) continue;
    while (decimals < 4 && Math.abs(v * 10 ** decimals - Math.round(v * 10 ** decimals)) > 1e-6) decimals++;
  }
  return decimals;
}

/** A price with a fixed number of decimals (see {@link priceDecimals}). */
export function formatPriceFixed(value: number | null | undefined, decimals: number): string {
  if (!isNum(value)) return DASH;
  return value.toFixed(decimals);
}

/** The spread: at least two decimals (one cent is `0.01`), up to four. */
export function formatSpread(value: number | null | undefined): string {
  if (!isNum(value)) return DASH;
  return formatPrice(value);
}

const sizeFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });

/** A size in contracts: thousands separated, fractions (fractional contracts) to two places. */
export function formatSize(value: number | null | undefined): string {
  if (!isNum(value)) return DASH;
  return sizeFormat.format(value);
}

/**
 * A book level's size or cumulative depth: in full below 100,000 contracts, compact from there
 * (`123K`, `1.2M`), so a deep book's columns stay readable side by side.
 */
export function formatDepth(value: number | null | undefined): string {
  if (!isNum(value)) return DASH;
  return Math.abs(value) < 100_000 ? formatSize(value) : formatCompact(value);
}

/** A large count, compact: `950`, `12.3K`, `4.5M`. */
export function formatCompact(value: number | null | undefined): string {
  if (!isNum(value)) return DASH;
  const abs = Math.abs(value);
  const sign = value < 0 ? "-" : "";
  if (abs < 1000) return sign + sizeFormat.format(abs);
  const units: Array<[number, string]> = [
    [1e3, "K"],
    [1e6, "M"],
    [1e9, "B"],
  ];
  // The smallest unit whose rounded figure stays under 1000 (999,950 is "1M", not "1000K").
  let text = "";
  for (const [size, unit] of units) {
    const scaled = abs / size;
    text = (scaled >= 100 ? scaled.toFixed(0) : scaled.toFixed(1).replace(/\.0$/, "")) + unit;
    if (Number.parseFloat(text) < 1000) break;
  }
  return sign + text;
}

/** A change in percent with its sign: `+1.25%`, `-0.40%`, `0.00%`. */
export function formatPercent(value: number | null | undefined): string {
  if (!isNum(value)) return DASH;
  const fixed = value.toFixed(2);
  if (fixed === "0.00" || fixed === "-0.00") return "0.00%";
  return `${value > 0 ? "+" : ""}${fixed}%`;
}

/** The direction of a change, for colour: up, down or flat. */
export type Direction = "up" | "down" | "flat";

export function direction(value: number | null | undefined): Direction {
  if (!isNum(value)) return "flat";
  if (value.toFixed(2) === "0.00" || value.toFixed(2) === "-0.00") return "flat";
  return value > 0 ? "up" : "down";
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/**
 * A local wall-clock time, 24 h: `14:03:07` today; on another day with its date, to the
 * minute (`Dec 3 14:03`, `Dec 3 2025 14:03` in another year), so an old trade or a feed lost
 * days ago does not read as today.
 */
export function formatTime(epochMs: number | null | undefined, nowMs: number = Date.now()): string {
  if (!isNum(epochMs)) return DASH;
  const d = new Date(epochMs);
  const now = new Date(nowMs);
  const pad = (n: number) => String(n).padStart(2, "0");
  const sameYear = d.getFullYear() === now.getFullYear();
  if (sameYear && d.getMonth() === now.getMonth() && d.getDate() === now.getDate()) {
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  const date = `${MONTHS[d.getMonth()]} ${d.getDate()}${sameYear ? "" : ` ${d.getFullYear()}`}`;
  return `${date} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** How long ago, coarse: `now`, `12s ago`, `4m ago`, `3h ago`, `2d ago`. */
export function formatAgo(epochMs: number | null | undefined, nowMs: number): string {
  if (!isNum(epochMs)) return "never";
  const seconds = Math.max(0, Math.floor((nowMs - epochMs) / 1000));
  if (seconds < 2) return "now";
  if (seconds < 60) return `${seconds}s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours}h ago`;
  return `${Math.floor(hours / 24)}d ago`;
}

/** A close time relative to now: `closes in 3h 20m`, `closed 2d ago`. */
export function formatCloseTime(epochMs: number | null | undefined, nowMs: number): string {
  if (!isNum(epochMs)) return "";
  const diff = epochMs - nowMs;
  if (diff <= 0) return `closed ${formatAgo(epochMs, nowMs)}`;
  const minutes = Math.floor(diff / 60000);
  if (minutes < 1) return "closes in <1m";
  if (minutes < 60) return `closes in ${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `closes in ${hours}h ${minutes % 60}m`;
  return `closes in ${Math.floor(hours / 24)}d`;
}

/** Milliseconds, for lag: `3 ms`, `1.2 s`. */
export function formatMs(value: number | null | undefined): string {
  if (!isNum(value)) return DASH;
  if (Math.abs(value) < 1000) return `${Math.round(value)} ms`;
  return `${(value / 1000).toFixed(1)} s`;
}

/** Messages per second: `0`, `12.5`, `1.2K`. */
export function formatRate(value: number | null | undefined): string {
  if (!isNum(value)) return DASH;
  if (value < 100) return value.toFixed(value < 10 ? 1 : 0);
  return formatCompact(value);
}

/** A whole count: `0`, `12`, `1,204`. */
export function formatCount(value: number | null | undefined): string {
  if (!isNum(value)) return DASH;
  return sizeFormat.format(Math.round(value));
}
