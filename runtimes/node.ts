/**
 * Node: node:http with @hono/node-server's request listener (runtimes/node-http.ts), then
 * `listen({ reusePort: true })` (its `serve()` cannot pass reusePort). Node < 22.12 (and 23.0)
 * ignores the option, so there the shards fall back to node:cluster. Bundled to dist/node.js,
 * the entry of `node dist/node.js`.
 * @module
 */
import { spawn } from "node:child_process";
import { realpathSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Launched, StartOptions } from "../src/launcher/cli.ts";
import { demoAppBeside, isShardThread, main } from "../src/main.ts";
import { SHARD_ENV, SHARD_STDIO } from "../src/protocol.ts";
import { runtimeDir } from "../src/runtime-dir.ts";
import type { Runtime } from "../src/types.ts";

const entry = fileURLToPath(import.meta.url);

/** listen({ reusePort }) arrived in Node 23.1 and 22.12. */
function hasReusePort(version: string): boolean {
  const [major, minor] = version.split(".").map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
}

const version = process.versions.node;

export const node: Runtime = {
  name: "node",
  entry,
  version,
  reusePortGap: hasReusePort(version)
    ? undefined
    : `Node ${version} silently ignores listen({ reusePort }) (it needs 22.12+ or 23.1+)`,
  spawnShard(env) {
    if (this.reusePortGap) {
      // Its module object is the cluster itself (CommonJS), loaded only for this fallback.
      const cluster = process.getBuiltinModule("node:cluster") as unknown as import("node:cluster").Cluster;
      cluster.setupPrimary({ exec: entry, stdio: SHARD_STDIO });
      const worker = cluster.fork(env);
      // The Worker re-emits its process's errors (an EPIPE when a drain message meets a closing
      // channel); the supervisor handles them on the process, so none may go unhandled here.
      worker.on("error", () => {});
      return worker.process;
    }
    return spawn(process.execPath, [...process.execArgv, entry], { stdio: SHARD_STDIO, env });
  },
  // --http native and node are the same server here. Loaded by the shard that listens: the
  // launcher never loads @hono/node-server and node:http2 (about 40 ms of CPU on its way to
  // spawning the first shard).
  async listen(options) {
    const listener = await (await import("./node-http.ts")).listenNodeHttp(options);
    // What this shard compiled goes to the compile cache now (see useCompileCache), not only at
    // its exit: the next shard to start (a restart, a reload, a scale-up) finds it.
    setImmediate(() => process.getBuiltinModule("node:module").flushCompileCache?.());
    return listener;
  },
  async loadTypeScript() {
    // Node 22.18+ strips types itself; older ones need tsx's loader.
    if ((process.features as { typescript?: unknown }).typescript) return;
    // tsx: an optional peer dependency of the package, which only such a Node needs.
    let tsx: typeof import("tsx/esm/api");
    try {
      tsx = await import("tsx/esm/api");
    } catch {
      throw new Error(
        `Node ${version} cannot strip types (22.18+ can) and tsx is not installed: npm install tsx`,
      );
    }
    tsx.register();
  },
};

const isEntry = process.argv[1] !== undefined && realpathSync(process.argv[1]) === entry;
const defaultApp = demoAppBeside(import.meta.url);

/** Starts shardport on Node from your own entry file: `await start({ app: "./app.ts", shards: 4 })`. */
export const start = async (options?: StartOptions): Promise<Launched> =>
  (await import("../src/launcher/cli.ts")).start(node, defaultApp, options);

/**
 * Node's compile cache (Node 22.8+): the V8 code cache and stripped TypeScript of each module a
 * process compiles, kept on disk, so that the next process to load the same unchanged module
 * skips compiling it. A Node shard spends most of its start compiling the app and its
 * dependencies (here: 150 -> 85 ms to import the demo app and @hono/node-server). For the
 * launcher of the command line and, through the environment they inherit, its shards (processes
 * and threads), in the launcher's private folder (src/runtime-dir.ts), unless
 * NODE_COMPILE_CACHE already names a folder or NODE_DISABLE_COMPILE_CACHE is set.
 */
function useCompileCache(): void {
  const { enableCompileCache } = process.getBuiltinModule("node:module");
  if (!enableCompileCache || process.env.NODE_DISABLE_COMPILE_CACHE) return;
  try {
    process.env.NODE_COMPILE_CACHE ||= join(runtimeDir(), "node-compile-cache");
  } catch {
    return; // no private folder: the launcher says so when it makes its control socket
  }
  enableCompileCache(process.env.NODE_COMPILE_CACHE);
}

/** The command line: a shard or the launcher. The package's `shardport` bin calls it on Node. */
export const cli = (): Promise<void> => {
  if (!process.env[SHARD_ENV]) useCompileCache();
  return main(node, defaultApp);
};

// A shard thread runs this module too (threads mode).
// Not awaited: a pending top-level await would hold back later dynamic imports (Deno).
if (isEntry || isShardThread()) cli();
