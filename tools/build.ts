/**
 * `npm run build` (and `prepack`, so a packed tarball always has it): dist/, what the npm package
 * runs. Node, Bun and Deno all refuse to strip types under node_modules, so every runtime gets
 * bundled JavaScript: dist/{node,bun,deno,deno-thread,deno-shard}.js (the runtime entries, sharing chunks,
 * dependencies left to node_modules), dist/health.js and dist/shard.js (the app's imports),
 * dist/app.js (the demo app, Hono bundled in) and dist/types/ (declarations for every export).
 * @module
 */
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const dist = join(root, "dist");
const common = {
  absWorkingDir: root,
  bundle: true,
  platform: "node",
  format: "esm",
  // The oldest Node the launcher still runs on (its node:cluster fallback).
  target: "node20",
  logLevel: "warning",
} as const;

rmSync(dist, { recursive: true, force: true });
await build({
  ...common,
  entryPoints: {
    node: "runtimes/node.ts",
    bun: "runtimes/bun.ts",
    deno: "runtimes/deno.ts",
    "deno-thread": "runtimes/deno-thread.ts",
    "deno-shard": "runtimes/deno-shard.ts",
    health: "src/shard/health.ts",
    shard: "src/shard/info.ts",
  },
  // Lazy imports stay lazy (a Deno shard thread never loads node:http's adaptor, a shard never
  // loads the launcher) and the entries share one copy of the code.
  splitting: true,
  packages: "external",
  outdir: dist,
  chunkNames: "chunks/[name]-[hash]",
});
await build({ ...common, entryPoints: ["src/app.ts"], outfile: join(dist, "app.js") });

execFileSync(join(root, "node_modules", ".bin", "tsc"), ["-p", "tsconfig.types.json"], {
  cwd: root,
  stdio: "inherit",
});
// The sources import each other as ./x.ts; declarations must say ./x.js, which TypeScript (bundler
// and nodenext) and Deno map to ./x.d.ts.
const declarations = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? declarations(join(dir, entry.name)) : [join(dir, entry.name)],
  );
for (const file of declarations(join(dist, "types"))) {
  const text = readFileSync(file, "utf8");
  writeFileSync(file, text.replace(/(["']\.\.?\/[^"']*)\.ts(["'])/g, "$1.js$2"));
}
