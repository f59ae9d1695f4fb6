import { type FormEvent, useState } from "react";
import { type Account, useAccount } from "../auth";

/** The top bar's sign-in: a name with the store's dev issuer, or a pasted provider token. */
export function AccountBox() {
  return <AccountView account={useAccount()} />;
}

export function AccountView({ account }: { account: Account }) {
  const [text, setText] = useState("");
  if (account.status === "signedIn") {
    return (
      <span className="account" data-testid="account" data-state="signedIn">
        <span className="account-name" data-testid="account-name">
          {account.name}
        </span>
        <button type="button" className="link" onClick={account.signOut} data-testid="sign-out">
          Sign out
        </button>
      </span>
    );
  }
  const dev = account.devConfig != null;
  const submit = (e: FormEvent) => {
    e.preventDefault();
    account.signIn(text);
  };
  return (
    <form className="account" data-testid="account" data-state={account.status} onSubmit={submit}>
      <input
        value={text}
        onChange={(e) => setText(e.target.value)}
        placeholder={dev ? "Your name" : "Paste a token"}
        aria-label={dev ? "Name to sign in with" : "Token from your identity provider"}
        data-testid="sign-in-name"
        maxLength={dev ? 64 : 8192}
        disabled={account.devConfig === undefined || account.status === "signingIn"}
      />
      <button type="submit" data-testid="sign-in" disabled={!text.trim() || account.status === "signingIn"}>
        {account.status === "signingIn" ? "Signing in…" : "Sign in"}
      </button>
      {account.error ? (
        <span className="account-error" role="alert">
          {account.error}
        </span>
      ) : null}
    </form>
  );
}
