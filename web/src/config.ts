/**
 * Where the dashboard finds its store.
 *
 * By default the store is the server that served this page (`marketpulse serve` hosts the
 * dashboard at `/`), so the deployment URL is the page's own origin. `?store=URL` in the page
 * address, or `VITE_MARKETPULSE_STORE` at build time, points it elsewhere.
 */

export interface LocationLike {
  origin: string;
  search: string;
}

/** Thrown for a store address the Convex client could not use. */
export class StoreUrlError extends Error {}

/**
 * Normalises a store address for `ConvexReactClient`.
 *
 * The npm client appends `/api/<version>/sync` to everything after `://`, so a trailing slash
 * would produce `//api/...`; it is dropped here. Only http(s) is accepted, as the client does.
 */
export function normaliseStoreUrl(raw: string): string {
  const trimmed = raw.trim();
  let url: URL;
  try {
    url = new URL(trimmed);
  } catch {
    throw new StoreUrlError(`not a URL: ${JSON.stringify(trimmed)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new StoreUrlError(`the store URL must start with http:// or https://, got ${url.protocol}`);
  }
  const path = url.pathname.replace(/\/+$/, "");
  return `${url.protocol}//${url.host}${path}`;
}

/** Resolves the deployment URL: `?store=` first, then the build-time env, then the origin. */
export function resolveStoreUrl(location: LocationLike, envUrl?: string): string {
  const fromQuery = new URLSearchParams(location.search).get("store");
  if (fromQuery) return normaliseStoreUrl(fromQuery);
  if (envUrl) return normaliseStoreUrl(envUrl);
  return normaliseStoreUrl(location.origin);
}

/** The market to open first: `?market=TICKER`, if given. */
export function initialMarket(location: LocationLike): string | null {
  const ticker = new URLSearchParams(location.search).get("market");
  return ticker ? ticker.trim() || null : null;
}
