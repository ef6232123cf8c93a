/**
 * How one shard is started: its spec (what it is told), and the process or thread that runs it.
 * Used by the supervisor for every shard, and by src/launcher/early.ts for the first one.
 * @module
 */
import { procOf } from "../proc.ts";
import { SHARD_ENV, type ShardSpec } from "../protocol.ts";
import type { Runtime, ShardHandle } from "../types.ts";
import type { Config } from "./config.ts";

let threads: typeof import("./threads.ts") | undefined;

/**
 * Loads threads mode's handle (node:worker_threads): before the first shard thread starts, and
 * only in threads mode and where the runtime has no threads of its own, so that the launcher's
 * path to its first shard does not load it.
 */
export async function loadThreads(runtime: Runtime): Promise<void> {
  if (!runtime.spawnThread) threads ??= await import("./threads.ts");
}

/**
 * An absolute path as a file: URL that decodes back to it, as node:url's pathToFileURL makes it on
 * POSIX, without loading node:url on the way to the first shard (2 to 3 ms of CPU on Bun).
 */
const fileUrl = (path: string) => `file://${encodeURI(path).replace(/[?#]/g, encodeURIComponent)}`;

export function shardSpec(config: Config, index: number, generation: number): ShardSpec {
  const { host, port, app, http, drainTimeoutMs, metricsPort, accessLog, tls, mode } = config;
  return {
    index,
    generation,
    host,
    port,
    app,
    appUrl: fileUrl(app),
    http,
    drainTimeoutMs,
    metrics: metricsPort !== undefined,
    accessLog,
    tls,
    thread: mode === "threads",
  };
}

/** Starts the shard of `spec`: a child process, or a thread in threads mode. */
export function spawnShard(runtime: Runtime, config: Config, spec: ShardSpec): ShardHandle {
  const env = { ...procOf(runtime).env(), [SHARD_ENV]: JSON.stringify(spec) };
  const { host, port, app } = config;
  return config.mode === "threads"
    ? (runtime.spawnThread?.(spec) ?? new (threadShard())(runtime.entry, env))
    : runtime.spawnShard(env, { host, port, app });
}

function threadShard() {
  if (!threads) throw new Error("threads mode: loadThreads() first");
  return threads.ThreadShard;
}
