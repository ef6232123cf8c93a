/**
 * What a shard does: load the app, listen with SO_REUSEPORT, tell the launcher it is ready,
 * and drain when told to (or when the launcher is gone).
 * @module
 */
import { AppModuleError, loadApp } from "./app-module.ts";
import { log } from "./log.ts";
import type { LauncherMessage, ShardMessage, ShardSpec } from "./protocol.ts";
import { ListenError, type Listener, type Runtime } from "./types.ts";

function send(message: ShardMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}

async function fail(stage: "load" | "listen", error: unknown): Promise<never> {
  const message = (error as Error)?.message ?? String(error);
  const code = error instanceof ListenError ? error.code : undefined;
  await send({ type: "failed", stage, code, message: message.split("\n")[0] });
  process.exit(error instanceof AppModuleError ? 2 : 1);
}

export async function runShard(runtime: Runtime, spec: ShardSpec): Promise<void> {
  // Ctrl-C reaches every process of the terminal's group: the launcher decides what it means.
  process.on("SIGINT", () => {});

  let listener: Listener | undefined;
  let draining = false;
  const drain = async () => {
    if (draining) return;
    draining = true;
    if (!listener) process.exit(0);
    const cut = setTimeout(() => {
      log.warn(
        `shard ${spec.index} (pid ${process.pid}): drain timeout of ${spec.drainTimeoutMs} ms, cutting connections`,
      );
      listener?.closeAll();
    }, spec.drainTimeoutMs);
    await listener.close();
    clearTimeout(cut);
    process.exit(0);
  };
  process.on("SIGTERM", drain);
  process.on("message", (message: LauncherMessage) => {
    if (message?.type === "drain") drain();
  });
  // The launcher is gone (even SIGKILLed): its end of the IPC channel closed. No orphans.
  process.on("disconnect", drain);

  const app = await loadApp(spec.app, runtime).catch((error) => fail("load", error));
  listener = await runtime
    .listen({ host: spec.host, port: spec.port, http: spec.http, fetch: app.fetch })
    .catch((error) => fail("listen", error));
  await send({ type: "ready", pid: process.pid });
}
