import { describe, expect, it } from "vitest";
import { initialMarket, normaliseStoreUrl, resolveStoreUrl, StoreUrlError } from "./config";

const at = (origin: string, search = "") => ({ origin, search });

describe("resolveStoreUrl", () => {
  it("defaults to the page's own origin", () => {
    expect(resolveStoreUrl(at("http://127.0.0.1:3210"))).toBe("http://127.0.0.1:3210");
  });
  it("prefers ?store= over the build-time env, and the env over the origin", () => {
    expect(resolveStoreUrl(at("http://127.0.0.1:3210", "?store=http://127.0.0.1:4000"), "http://x:1")).toBe(
      "http://127.0.0.1:4000",
    );
    expect(resolveStoreUrl(at("http://127.0.0.1:3210"), "https://store.example:8443")).toBe(
      "https://store.example:8443",
    );
  });
  it("drops trailing slashes, which the npm client would turn into //api", () => {
    expect(resolveStoreUrl(at("http://h", "?store=http://127.0.0.1:4000/"))).toBe("http://127.0.0.1:4000");
    expect(normaliseStoreUrl("https://h/prefix///")).toBe("https://h/prefix");
  });
  it("rejects what the client cannot use, with a clear error", () => {
    expect(() => normaliseStoreUrl("ws://127.0.0.1:3210")).toThrow(StoreUrlError);
    expect(() => normaliseStoreUrl("not a url")).toThrow(/not a URL/);
  });
});

describe("initialMarket", () => {
  it("reads ?market=", () => {
    expect(initialMarket(at("http://h", "?market=KXBTC-25"))).toBe("KXBTC-25");
    expect(initialMarket(at("http://h", "?market=%20"))).toBeNull();
    expect(initialMarket(at("http://h"))).toBeNull();
  });
});
