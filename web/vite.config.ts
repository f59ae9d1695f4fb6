import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";
import { fileURLToPath } from "node:url";

// The built dashboard ships inside the Python package, so `pip install` users need no Node:
// `marketpulse serve` serves this directory at `/`.
const outDir = fileURLToPath(new URL("../src/marketpulse/dashboard/static", import.meta.url));

export default defineConfig({
  plugins: [react()],
  // Relative asset URLs: the page works wherever the store mounts it.
  base: "./",
  build: {
    outDir,
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 400,
    rollupOptions: {
      output: {
        // Stable chunk names keep the committed assets' diffs readable between builds.
        manualChunks(id: string) {
          if (id.includes("lightweight-charts") || id.includes("fancy-canvas")) return "charts";
          if (id.includes("node_modules")) return "vendor";
          return undefined;
        },
      },
    },
  },
  server: { port: 5173 },
});
