/**
 * Bun: `Bun.serve({ reusePort: true })`. Never node:http, whose reusePort Bun drops
 * (oven-sh/bun#43690). Entry of `bun run start` (and, bundled as dist/bun.js, of the package's bin on Bun).
 * @module
 */
import type { Launched, StartOptions } from "../src/launcher/cli.ts";
import { demoAppBeside, isShardThread, main } from "../src/main.ts";
import { nodeProc } from "../src/proc.ts";
import { ListenError, type Runtime } from "../src/types.ts";
import type { OwnListener } from "./bun-listener.ts";

// No node: module at the top: a shard process loads none of the launcher's (node:child_process,
// node:url cost Bun a few ms each at start).
const entry = import.meta.path;

export const bun: Runtime = {
  name: "bun",
  // `process` as on Node, but a file is asked of Bun.file: node:fs would cost the launcher's way
  // to its first shards 3 to 5 ms of loading (the rest of the launcher loads it afterwards).
  proc: {
    ...nodeProc,
    async isFile(path) {
      try {
        return (await Bun.file(path).stat()).isFile();
      } catch {
        return false;
      }
    },
  },
  entry,
  version: Bun.version,
  refusesHttp: { node: "Bun's node:http silently drops reusePort (oven-sh/bun#43690)" },
  // Loaded by the launcher only, synchronously (spawnShard is): a shard never runs it (dist/bun.js
  // carries it, lazily initialised).
  spawnShard: (env) =>
    new (require("./bun-process.ts") as typeof import("./bun-process.ts")).BunShardProcess(entry, env),
  async canBind(hostname, port) {
    try {
      Bun.listen({ hostname, port, socket: { data() {} } }).stop(true);
      return true;
    } catch {
      return false;
    }
  },
  async listen({ port, host, fetch, tls }) {
    let server: Bun.Server<undefined>;
    let own: OwnListener | undefined;
    // Shards only: the launcher, which loads this module too, never listens through it.
    const { listenFindingSocket, readAcceptedSleeping } = await import("./bun-listener.ts");
    try {
      // HTTPS: the PEM the launcher checked for this generation; h2 and http/1.1 by ALPN.
      const secure = tls && { tls: { cert: tls.cert, key: tls.key }, http2: true };
      ({ value: server, own } = await listenFindingSocket(port, () =>
        // development: false, whatever NODE_ENV says: otherwise a handler that throws answers
        // with Bun's error page, the error's message, stack and working folder in it.
        Bun.serve({ port, hostname: host, reusePort: true, development: false, fetch, ...secure }),
      ));
    } catch (error) {
      const { message, code } = error as Error & { code?: string };
      throw new ListenError(message, code ?? "EUNKNOWN");
    }
    return {
      // Stop listening first, read what was accepted, then stop (runtimes/bun-listener.ts).
      close: async () => {
        if (await own?.stop()) await readAcceptedSleeping();
        await server.stop();
      },
      closeAll: () => void server.stop(true),
    };
  },
};

const defaultApp = demoAppBeside(import.meta.url);

/** Starts shardport on Bun from your own entry file: `await start({ app: "./app.ts", shards: 4 })`. */
export const start = async (options?: StartOptions): Promise<Launched> =>
  (await import("../src/launcher/cli.ts")).start(bun, defaultApp, options);

/** The command line: a shard or the launcher. The package's `shardport` bin calls it on Bun. */
export const cli = (): Promise<void> => main(bun, defaultApp);

// A shard thread runs this module too (threads mode).
// Not awaited: a pending top-level await would hold back later dynamic imports (Deno).
if (import.meta.main || isShardThread()) cli();
