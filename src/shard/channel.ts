/**
 * How a shard process or a node:worker_threads shard thread talks to its launcher. (A Deno
 * shard thread is a Deno Worker and brings its own channel: runtimes/deno-thread.ts.)
 * A process shard never loads node:worker_threads: its spec says whether it is a thread.
 * @module
 */
import type { ShardSpec } from "../protocol.ts";
import type { LauncherChannel } from "./shard.ts";

/** A child process: the IPC channel on fd 3. */
const processChannel = (): LauncherChannel => ({
  ownsProcess: true,
  pid: process.pid,
  send: (message) =>
    new Promise((resolve) => {
      if (!process.send || !process.connected) return resolve();
      process.send(message, undefined, {}, () => resolve());
    }),
  onMessage: (listener) => process.on("message", listener),
  // Node emits "disconnect" once, listened to or not: a launcher gone before this shard listened
  // for it is seen by process.connected.
  onGone: (listener) =>
    process.connected === false ? queueMicrotask(listener) : process.on("disconnect", listener),
  onSignal: (signal, listener) => process.on(signal, listener),
  exit: (code) => process.exit(code),
});

/** A node:worker_threads thread: process.exit there ends only the thread. */
const threadChannel = (): LauncherChannel => {
  const { parentPort } = process.getBuiltinModule("node:worker_threads");
  return {
    ownsProcess: false,
    pid: process.pid,
    send: async (message) => parentPort?.postMessage(message),
    onMessage: (listener) => parentPort?.on("message", listener),
    onGone: () => {},
    onSignal: () => {},
    exit: (code) => process.exit(code),
  };
};

export const launcherChannel = (spec: ShardSpec): LauncherChannel =>
  spec.thread ? threadChannel() : processChannel();
