/**
 * What a shard does: load the app, listen with SO_REUSEPORT, tell the launcher it is ready,
 * and drain when told to (or when the launcher is gone).
 * @module
 */
import { isMainThread, parentPort } from "node:worker_threads";
import { AppModuleError, loadApp } from "./app-module.ts";
import { markDraining } from "./health.ts";
import { loadLog, log, setLogShard } from "./log.ts";
import type { LauncherMessage, ShardMessage, ShardSpec } from "./protocol.ts";
import { instrument } from "./shard-stats.ts";
import { ListenError, type Listener, type Runtime } from "./types.ts";

/** The way to the launcher: the IPC channel of a child process, or the port of a worker thread. */
interface LauncherChannel {
  send(message: ShardMessage): Promise<void>;
  onMessage(listener: (message: LauncherMessage) => void): void;
  /** The launcher is gone. A thread cannot outlive it, so only a process listens. */
  onGone(listener: () => void): void;
}

const processChannel: LauncherChannel = {
  send: (message) =>
    new Promise((resolve) => {
      if (!process.send || !process.connected) return resolve();
      process.send(message, undefined, {}, () => resolve());
    }),
  onMessage: (listener) => process.on("message", listener),
  onGone: (listener) => process.on("disconnect", listener),
};

const threadChannel: LauncherChannel = {
  send: async (message) => parentPort?.postMessage(message),
  onMessage: (listener) => parentPort?.on("message", listener),
  onGone: () => {},
};

const channel = isMainThread ? processChannel : threadChannel;
const send = channel.send;

async function fail(stage: "load" | "listen", error: unknown): Promise<never> {
  const message = (error as Error)?.message ?? String(error);
  const code = error instanceof ListenError ? error.code : undefined;
  await send({ type: "failed", stage, code, message: message.split("\n")[0] });
  process.exit(error instanceof AppModuleError ? 2 : 1);
}

export async function runShard(runtime: Runtime, spec: ShardSpec): Promise<void> {
  setLogShard(spec.index);
  // Ctrl-C reaches every process of the terminal's group: the launcher decides what it means.
  // (process.exit in a worker thread ends only that thread.)
  if (isMainThread) process.on("SIGINT", () => {});

  let listener: Listener | undefined;
  let draining = false;
  const drain = async () => {
    if (draining) return;
    draining = true;
    markDraining();
    if (!listener) process.exit(0);
    // A drain may have something to say (the timeout); have the logger ready before the exit.
    const logReady = loadLog();
    let cutDone: () => void = () => {};
    const cutAndGone = new Promise<void>((resolve) => {
      cutDone = resolve;
    });
    const cut = setTimeout(() => {
      log.warn(`shard ${spec.index}: drain timeout of ${spec.drainTimeoutMs} ms, cutting connections`);
      listener?.closeAll();
      // Whatever the server still waits for after the cut, the shard exits a moment later.
      setTimeout(cutDone, 1000);
    }, spec.drainTimeoutMs);
    await Promise.race([listener.close(), cutAndGone]);
    clearTimeout(cut);
    await logReady;
    process.exit(0);
  };
  if (isMainThread) process.on("SIGTERM", drain);
  let stats: Awaited<ReturnType<typeof instrument>> | undefined;
  channel.onMessage(async (message) => {
    if (message?.type === "drain") drain();
    if (message?.type === "stats" && stats)
      send({ type: "stats", id: message.id, ...(await stats.snapshot()) });
  });
  // The launcher is gone (even SIGKILLed): its end of the IPC channel closed. No orphans.
  channel.onGone(drain);

  const app = await loadApp(spec.app, runtime).catch((error) => fail("load", error));
  stats = await instrument(app.fetch, spec);
  if (spec.accessLog) await loadLog();
  listener = await runtime
    .listen({ host: spec.host, port: spec.port, http: spec.http, fetch: stats.fetch })
    .catch((error) => fail("listen", error));
  await send({ type: "ready", pid: process.pid });
}
