/**
 * What each runtime entry runs: a shard when the launcher started this process or thread
 * (src/shard/), else the launcher (src/launcher/). Each side is imported only where it runs, so
 * a shard never loads the launcher's code and the launcher never loads the app.
 * @module
 */

import { say } from "./log.ts";
import { procOf } from "./proc.ts";
import { SHARD_ENV } from "./protocol.ts";
import type { ShardRuntime } from "./shard/shard.ts";
import type { Runtime } from "./types.ts";

/**
 * True in a shard thread (threads mode): the runtime entry then runs as a shard, not a launcher.
 * node:worker_threads is loaded only when asked (a module that is not the entry): a shard process
 * does not load it before it listens (about 5 ms of CPU on Bun).
 */
export const isShardThread = () =>
  Boolean(process.env[SHARD_ENV]) && !process.getBuiltinModule("node:worker_threads").isMainThread;

/**
 * The demo app beside a runtime entry (a file: URL): `dist/app.js` beside a bundled entry
 * (`dist/<runtime>.js`, what the npm package runs), else `src/app.ts`. The path is the URL's
 * decoded path, as node:url's fileURLToPath gives on POSIX, without loading node:url in every
 * shard (Bun).
 */
export const demoAppBeside = (entryUrl: string): string =>
  decodeURIComponent(new URL(entryUrl.endsWith(".js") ? "./app.js" : "../src/app.ts", entryUrl).pathname);

/** The entry point of every runtime; an unexpected error ends the process with exit 1. */
export async function main(runtime: Runtime, defaultApp: string): Promise<void> {
  // Up to the first shards, the process as the runtime tells it (Runtime.proc): on Deno, `process` would
  // boot its Node layer first (see Runtime.proc).
  const proc = procOf(runtime);
  try {
    if (proc.env()[SHARD_ENV]) {
      await shardMain(runtime);
    } else {
      // Signals first, before anything else of the launcher loads (see launcher/signals.ts).
      const { LauncherSignals } = await import("./launcher/signals.ts");
      const signals = new LauncherSignals(proc);
      // Then the first shards; the rest of the launcher loads once they have spoken (launcher/early.ts).
      const { endEarly, firstWords, killEarly, startEarly } = await import("./launcher/early.ts");
      const early = await startEarly(runtime, defaultApp, proc.args());
      signals.beforeStart = () => endEarly(early);
      signals.killBeforeStart = () => killEarly(early);
      await firstWords(early);
      // Stopped meanwhile: those shards are being ended, then the process exits (signals.ts).
      if (signals.stopping) return;
      const { runLauncher } = await import("./launcher/cli.ts");
      await runLauncher(runtime, defaultApp, signals, early);
    }
  } catch (error) {
    say.error(`unexpected: ${(error as Error)?.stack ?? error}`);
    process.exit(1);
  }
}

/**
 * A shard process or thread: the shard side only (src/shard/), the spec from SHARD_ENV. Also the
 * whole of a Deno shard process's entry (runtimes/deno-shard.ts); an unexpected error ends the
 * process with exit 1.
 */
export async function shardMain(runtime: ShardRuntime): Promise<void> {
  try {
    const [{ runShard }, { launcherChannel }] = await Promise.all([
      import("./shard/shard.ts"),
      import("./shard/channel.ts"),
    ]);
    const spec = JSON.parse(process.env[SHARD_ENV] ?? "");
    await runShard(runtime, spec, launcherChannel(spec));
  } catch (error) {
    say.error(`unexpected: ${(error as Error)?.stack ?? error}`);
    process.exit(1);
  }
}
