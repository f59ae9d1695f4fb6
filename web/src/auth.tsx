import { createContext, type ReactNode, useCallback, useContext, useEffect, useMemo, useRef, useState } from "react";
import { useConvex } from "convex/react";

/** What the store's development issuer publishes at `/auth/dev/config` (docs/store.md). */
export type DevAuthConfig = {
  issuer: string;
  applicationID: string;
  tokenUrl: string;
  signInUrl: string;
};

type Token = { token: string; expiresAt: number };

/** The dev sign-in's config, or null when the store has none (a real provider is configured). */
export async function fetchDevConfig(storeUrl: string): Promise<DevAuthConfig | null> {
  try {
    const r = await fetch(new URL("/auth/dev/config", storeUrl));
    if (!r.ok || !(r.headers.get("content-type") ?? "").includes("json")) return null;
    return (await r.json()) as DevAuthConfig;
  } catch {
    return null;
  }
}

/** A fresh token for `name` from the dev issuer. */
export async function devToken(config: DevAuthConfig, name: string): Promise<Token> {
  const r = await fetch(config.tokenUrl, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name }),
  });
  if (!r.ok) throw new Error(`sign-in refused (${r.status})`);
  const body = (await r.json()) as Token;
  return { token: body.token, expiresAt: body.expiresAt };
}

/**
 * The `fetchToken` that `ConvexReactClient.setAuth` calls: the cached token while it has more
 * than a minute left, else a new one from `issue`; a forced refresh always asks again.
 * `issue` returning null (a pasted token cannot be renewed) signs the client out.
 */
export function tokenFetcher(issue: () => Promise<Token | null>, now: () => number = Date.now) {
  let cached: Token | null = null;
  return async ({ forceRefreshToken }: { forceRefreshToken: boolean }): Promise<string | null> => {
    if (!forceRefreshToken && cached && cached.expiresAt - now() > 60_000) return cached.token;
    try {
      cached = await issue();
    } catch {
      cached = null;
    }
    return cached?.token ?? null;
  };
}

const NAME_KEY = "marketpulse.signedInAs";

export type Account = {
  /** undefined while the store's sign-in options load; null: no dev sign-in (paste a token). */
  devConfig: DevAuthConfig | null | undefined;
  status: "signedOut" | "signingIn" | "signedIn";
  name: string | null;
  error: string | null;
  /** Sign in: a name with the dev issuer, or a token from the configured provider. */
  signIn: (nameOrToken: string) => void;
  signOut: () => void;
};

const SIGNED_OUT: Account = {
  devConfig: null,
  status: "signedOut",
  name: null,
  error: null,
  signIn: () => {},
  signOut: () => {},
};

const AccountContext = createContext<Account>(SIGNED_OUT);

/** Who is signed in; signed out outside an `AuthProvider`. */
export function useAccount(): Account {
  return useContext(AccountContext);
}

/** Signs the official client in and out (`setAuth` / `clearAuth`) and shares who it is. */
export function AuthProvider({ storeUrl, children }: { storeUrl: string; children: ReactNode }) {
  const client = useConvex();
  const [devConfig, setDevConfig] = useState<DevAuthConfig | null | undefined>(undefined);
  const [status, setStatus] = useState<Account["status"]>("signedOut");
  const [name, setName] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const attempt = useRef(0);

  useEffect(() => {
    let live = true;
    fetchDevConfig(storeUrl).then((c) => live && setDevConfig(c));
    return () => {
      live = false;
    };
  }, [storeUrl]);

  const signIn = useCallback(
    (input: string) => {
      const value = input.trim();
      if (!value || devConfig === undefined) return;
      const mine = ++attempt.current;
      const display = devConfig ? value : "token user";
      setStatus("signingIn");
      setError(null);
      setName(display);
      const issue = devConfig
        ? () => devToken(devConfig, value)
        : (() => {
            let given = false; // a pasted token is good once; it cannot be refreshed
            return async () => (given ? null : ((given = true), { token: value, expiresAt: Infinity }));
          })();
      client.setAuth(tokenFetcher(issue), (ok) => {
        if (mine !== attempt.current) return;
        setStatus(ok ? "signedIn" : "signedOut");
        if (ok && devConfig) window.localStorage.setItem(NAME_KEY, value);
        if (!ok) setError("The store refused the sign-in");
      });
    },
    [client, devConfig],
  );

  const signOut = useCallback(() => {
    attempt.current++;
    client.clearAuth();
    window.localStorage.removeItem(NAME_KEY);
    setStatus("signedOut");
    setName(null);
    setError(null);
  }, [client]);

  // Back from a reload: sign the remembered name in again.
  useEffect(() => {
    const remembered = window.localStorage.getItem(NAME_KEY);
    if (devConfig && remembered && attempt.current === 0) signIn(remembered);
  }, [devConfig, signIn]);

  const account = useMemo(
    () => ({ devConfig, status, name, error, signIn, signOut }),
    [devConfig, status, name, error, signIn, signOut],
  );
  return <AccountContext.Provider value={account}>{children}</AccountContext.Provider>;
}
