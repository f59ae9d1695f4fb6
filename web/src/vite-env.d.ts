/// <reference types="vite/client" />

interface ImportMetaEnv {
  /** Build-time override of the store (deployment) URL; the page's origin otherwise. */
  readonly VITE_MARKETPULSE_STORE?: string;
}
