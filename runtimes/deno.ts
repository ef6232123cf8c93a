/**
 * Deno: `Deno.serve({ reusePort: true })`, which needs `--unstable-net`. Shards get only the
 * permissions they need (never -A). Entry of `deno task start`.
 * @module
 */
import { spawn } from "node:child_process";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { type Launched, main, type StartOptions, start as startWith } from "../src/main.ts";
import { isShardThread, SHARD_STDIO } from "../src/protocol.ts";
import { ListenError, type Runtime, type ShardAccess } from "../src/types.ts";

const entry = fileURLToPath(import.meta.url);
const root = dirname(dirname(entry));

/** Deno's error classes → the errno codes the launcher reports. */
const CODES: Record<string, string> = {
  AddrInUse: "EADDRINUSE",
  AddrNotAvailable: "EADDRNOTAVAIL",
  PermissionDenied: "EACCES",
  NotCapable: "EACCES",
};

/** Listen on host:port, read the project and the app's folder, read the environment. */
function permissions({ host, port, app }: ShardAccess): string[] {
  const extra = (process.env.SHARDPORT_DENO_FLAGS ?? "").split(/\s+/).filter(Boolean);
  return [
    `--allow-net=${host.includes(":") ? `[${host}]` : host}:${port}`,
    `--allow-read=${root},${dirname(app)}`,
    "--allow-env",
    "--allow-sys=hostname", // pino reads it at load
    ...extra,
  ];
}

export const deno: Runtime = {
  name: "deno",
  entry,
  version: Deno.version.deno,
  spawnShard: (env, access) =>
    spawn(Deno.execPath(), ["run", "--unstable-net", "--no-prompt", ...permissions(access), entry], {
      stdio: SHARD_STDIO,
      env,
    }),
  async listen(options) {
    if (options.http === "node") {
      const { listenNodeHttp } = await import("./node-http.ts");
      return listenNodeHttp(options);
    }
    const { port, host, fetch } = options;
    const abort = new AbortController();
    let server: Deno.HttpServer;
    let listening: () => void = () => {};
    const listened = new Promise<void>((resolve) => {
      listening = resolve;
    });
    try {
      server = Deno.serve(
        { port, hostname: host, reusePort: true, signal: abort.signal, onListen: () => listening() },
        fetch as Deno.ServeHandler,
      );
    } catch (error) {
      const { message, name } = error as Error;
      throw new ListenError(message, CODES[name] ?? "EUNKNOWN");
    }
    // Ready means listening: only then may the launcher count on this shard (and drain it).
    await listened;
    return {
      close: () => server.shutdown(),
      closeAll: () => abort.abort(),
    };
  },
  // Deno wants --allow-all for /proc and /sys files; the launcher, which may run processes, asks cat.
  readProc: (path) => new TextDecoder().decode(new Deno.Command("cat", { args: [path] }).outputSync().stdout),
};

const defaultApp = `${root}/src/app.ts`;

/** Starts shardport on Deno from your own entry file: `await start({ app: "./app.ts", shards: 4 })`. */
export const start = (options?: StartOptions): Promise<Launched> => startWith(deno, defaultApp, options);

// A shard thread runs this module too (threads mode).
// Not awaited: a pending top-level await would hold back later dynamic imports (Deno).
if (import.meta.main || isShardThread()) main(deno, defaultApp);
