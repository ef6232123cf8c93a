/**
 * What a shard does: load the app, listen with SO_REUSEPORT, tell the launcher it is ready,
 * and drain when told to (or when the launcher is gone).
 * @module
 */

import { loadLog, log, setLogShard } from "../log.ts";
import type { LauncherMessage, ShardMessage, ShardSpec, TlsRequest } from "../protocol.ts";
import { ListenError, type Listener, type ListenOptions, type Runtime } from "../types.ts";
import { AppModuleError, importApp } from "./app-import.ts";
import { markDraining } from "./health.ts";
import { setCurrentShard } from "./info.ts";
import { instrument } from "./stats.ts";

/**
 * The way to the launcher: the IPC channel of a child process (a Deno shard process: a Unix
 * socket, runtimes/deno-shard.ts), or the port of a worker thread.
 */
export interface LauncherChannel {
  /** This shard is a process of its own (signals and exit are its own). */
  readonly ownsProcess: boolean;
  readonly pid: number;
  send(message: ShardMessage | TlsRequest): Promise<void>;
  onMessage(listener: (message: LauncherMessage) => void): void;
  /** The launcher is gone. A thread cannot outlive it, so only a process listens. */
  onGone(listener: () => void): void;
  /** A signal to this process (only where it owns one). */
  onSignal(signal: ShardSignal, listener: () => void): void;
  /** Ends the shard (the process, or only the thread). */
  exit(code: number): void;
}

export type ShardSignal = "SIGHUP" | "SIGINT" | "SIGTERM" | "SIGTTIN" | "SIGTTOU";

/** What a shard needs of its runtime. */
export type ShardRuntime = Pick<Runtime, "name" | "listen" | "loadTypeScript" | "memoryUsage">;

/**
 * Runs one shard, talking to the launcher through `channel` (src/shard/channel.ts for a process
 * or a node:worker_threads thread, runtimes/deno-thread.ts for a Deno Worker).
 */
export async function runShard(
  runtime: ShardRuntime,
  spec: ShardSpec,
  channel: LauncherChannel,
): Promise<void> {
  const send = channel.send;
  const fail = async (stage: "load" | "listen", error: unknown): Promise<never> => {
    const message = (error as Error)?.message ?? String(error);
    const code = error instanceof ListenError ? error.code : undefined;
    await send({ type: "failed", stage, code, message: message.split("\n")[0] });
    channel.exit(error instanceof AppModuleError ? 2 : 1);
    // A thread's exit takes effect a moment later: nothing of this shard runs on meanwhile.
    return new Promise<never>(() => {});
  };
  setLogShard(spec.index);
  setCurrentShard(spec);
  // Ctrl-C reaches every process of the terminal's group: the launcher decides what it means.
  // So may SIGTTIN and SIGTTOU (scaling), whose default action would stop this process, and
  // SIGHUP (reload; a terminal's hang-up), whose default action would end it mid-request.
  if (channel.ownsProcess)
    for (const signal of ["SIGHUP", "SIGINT", "SIGTTIN", "SIGTTOU"] as const)
      channel.onSignal(signal, () => {});

  let listener: Listener | undefined;
  let draining = false;
  const drain = async (listenerStopped = false) => {
    if (draining) return;
    draining = true;
    markDraining();
    if (!listener) return channel.exit(0);
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
    await Promise.race([listener.close(listenerStopped), cutAndGone]);
    clearTimeout(cut);
    await logReady;
    channel.exit(0);
  };
  if (channel.ownsProcess) channel.onSignal("SIGTERM", () => drain());
  let stats: Awaited<ReturnType<typeof instrument>> | undefined;
  let gotTls: (tls: NonNullable<ListenOptions["tls"]>) => void = () => {};
  const tlsFromLauncher = new Promise<NonNullable<ListenOptions["tls"]>>((resolve) => {
    gotTls = resolve;
  });
  channel.onMessage(async (message) => {
    if (message?.type === "drain") drain(message.listenerStopped === true);
    if (message?.type === "tls")
      gotTls({ cert: message.cert, key: message.key, ticketKeys: message.ticketKeys });
    if (message?.type === "stats" && stats)
      send({
        type: "stats",
        id: message.id,
        ...(await stats.snapshot(message.latency, message.brief)),
        connections: listener?.connections?.(),
      });
  });
  // The launcher is gone (even SIGKILLed): its end of the IPC channel closed. No orphans.
  channel.onGone(() => drain());

  const app = await importApp(spec.appUrl, spec.app, runtime).catch((error) => fail("load", error));
  stats = await instrument(app.fetch, spec, runtime.memoryUsage ?? (() => process.memoryUsage()));
  if (spec.accessLog) await loadLog();
  // With TLS, the pair the launcher checked for this generation, and its session-ticket keys,
  // come over the channel: never in the spec, and no file is read here.
  let tls: ListenOptions["tls"];
  if (spec.tls) {
    await send({ type: "tls?" });
    tls = await tlsFromLauncher;
  }
  listener = await runtime
    .listen({ host: spec.host, port: spec.port, http: spec.http, fetch: stats.fetch, tls })
    .catch((error) => fail("listen", error));
  await send({ type: "ready", pid: channel.pid });
}
