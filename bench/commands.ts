/**
 * The commands both benchmarks start (bench/run.ts, bench/startup.ts): shardport through each
 * runtime's entry, as a user types it, and the peers.
 * @module
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export type BenchRuntime = "bun" | "deno" | "node";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));

/** shardport: `bun runtimes/bun.ts`, `deno task start`'s own command line, `node dist/node.js`. */
export const SHARDPORT: Record<BenchRuntime, string[]> = {
  bun: ["bun", "runtimes/bun.ts"],
  deno: JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8")).tasks.start.split(" "),
  node: ["node", "dist/node.js"],
};

/** The app on the runtime's own server, one process, no launcher (PORT from the environment). */
export const PLAIN: Record<BenchRuntime, string[]> = {
  bun: ["bun", "bench/peers/plain.js"],
  deno: [
    "deno",
    "run",
    "--unstable-net",
    "--allow-net",
    "--allow-env",
    "--allow-read",
    "bench/peers/plain.js",
  ],
  node: ["node", "bench/peers/plain.js"],
};

/** `deno serve --parallel` on 127.0.0.1:port (DENO_JOBS from the environment). */
export const denoServeParallel = (port: number): string[] => [
  "deno",
  "serve",
  "--parallel",
  "--allow-net",
  "--allow-env",
  "--allow-read",
  "--host",
  "127.0.0.1",
  "--port",
  String(port),
  "bench/peers/deno-serve.js",
];
