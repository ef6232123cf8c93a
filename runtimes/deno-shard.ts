/**
 * A Deno shard process's entry (runtimes/deno-process.ts starts it): the shard side only, without
 * Deno's Node layer on its way to listening (no `process` global, no node: module, no Node IPC:
 * booting that layer cost about 20 ms of the shard's start). The spec comes from Deno.env, the
 * launcher's channel is runtimes/deno-channel.ts's Unix socket, signals come by
 * Deno.addSignalListener. (The app, or pino once the shard logs, may still load the layer.)
 * @module
 */
import { type LauncherMessage, SHARD_ENV } from "../src/protocol.ts";
import { type LauncherChannel, runShard } from "../src/shard/shard.ts";
import { CHANNEL_ENV, type ChannelAddress, readLines, writeLine } from "./deno-channel.ts";
import { denoMemory, listenDeno } from "./deno-serve.ts";

/** Connects to the launcher at once; "gone" is the socket's end, or no launcher to connect to. */
function launcherChannel(address: ChannelAddress): LauncherChannel {
  const connected = Deno.connect({ transport: "unix", path: address.path }).then(async (conn) => {
    await writeLine(conn, { token: address.token });
    return conn;
  });
  const listeners: ((message: LauncherMessage) => void)[] = [];
  const goneListeners: (() => void)[] = [];
  let gone = false;
  connected
    .then((conn) =>
      readLines(conn, (message) => {
        for (const listener of listeners) listener(message as LauncherMessage);
      }),
    )
    .catch(() => {})
    .then(() => {
      gone = true;
      for (const listener of goneListeners) listener();
    });
  let writes: Promise<void> = Promise.resolve();
  return {
    ownsProcess: true,
    pid: Deno.pid,
    send: (message) => {
      writes = writes.then(async () => writeLine(await connected, message)).catch(() => {});
      return writes;
    },
    onMessage: (listener) => listeners.push(listener),
    onGone: (listener) => (gone ? listener() : goneListeners.push(listener)),
    onSignal: (signal, listener) => Deno.addSignalListener(signal, listener),
    exit: (code) => Deno.exit(code),
  };
}

/** The shard; an unexpected error ends the process with exit 1. */
async function shard(): Promise<void> {
  try {
    const spec = JSON.parse(Deno.env.get(SHARD_ENV) ?? "");
    const channel = launcherChannel(JSON.parse(Deno.env.get(CHANNEL_ENV) ?? ""));
    await runShard({ name: "deno", listen: listenDeno, memoryUsage: denoMemory }, spec, channel);
  } catch (error) {
    const text = `shardport: error: unexpected: ${(error as Error)?.stack ?? error}\n`;
    Deno.stderr.writeSync(new TextEncoder().encode(text));
    Deno.exit(1);
  }
}

// Not awaited: a pending top-level await would hold back the app's dynamic import (Deno).
shard();
