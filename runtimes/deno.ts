/**
 * Deno: `Deno.serve({ reusePort: true })`, which needs `--unstable-net`. Shards get only the
 * permissions they need (never -A). Entry of `deno task start`.
 * @module
 */
import { spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { log } from "../src/log.ts";
import { type Launched, main, type StartOptions, start as startWith } from "../src/main.ts";
import { type LauncherMessage, SHARD_STDIO, type ShardSpec } from "../src/protocol.ts";
import { isShardThread } from "../src/threads.ts";
import type { Runtime, ShardAccess } from "../src/types.ts";
import { denoMemory, listenDeno } from "./deno-serve.ts";
import type { ThreadExit } from "./deno-thread.ts";

const entry = fileURLToPath(import.meta.url);
const root = dirname(dirname(entry));

// Deno wants --allow-all for /proc and /sys files; the launcher, which may run processes, asks cat.
const readProc = (path: string) =>
  new TextDecoder().decode(new Deno.Command("cat", { args: [path] }).outputSync().stdout);

const address = ({ host, port }: ShardAccess) => `${host.includes(":") ? `[${host}]` : host}:${port}`;

/** Listen on host:port, read the project and the app's folder, read the environment. */
function permissions(access: ShardAccess): string[] {
  const extra = (process.env.SHARDPORT_DENO_FLAGS ?? "").split(/\s+/).filter(Boolean);
  return [
    `--allow-net=${address(access)}`,
    `--allow-read=${root},${dirname(access.app)}`,
    "--allow-env",
    "--allow-sys=hostname", // pino reads it at load
    ...extra,
  ];
}

/**
 * The same for a shard thread, as Worker options. Deno takes them only with
 * --unstable-worker-options (deno task start passes it); without it, and where
 * SHARDPORT_DENO_FLAGS asks for more, a thread has the launcher's permissions.
 */
function threadPermissions(access: ShardAccess) {
  if (process.env.SHARDPORT_DENO_FLAGS) return "inherit";
  return {
    net: [address(access)],
    read: [root, dirname(access.app)],
    env: true,
    sys: ["hostname"],
    run: false,
    write: false,
    ffi: false,
    import: "inherit",
  };
}

let threads = 0;
let narrowThreads: boolean | undefined;

/**
 * Deno ends the process (no exception) when a Worker is given permissions without
 * --unstable-worker-options, so look for the flag among deno's own flags first: the command line
 * before the script and its arguments.
 */
function mayNarrowThreads(): boolean {
  if (narrowThreads === undefined) {
    let flags: string[] = [];
    try {
      const words = readProc(`/proc/${Deno.pid}/cmdline`).split("\0").slice(0, -1);
      flags = words.slice(0, Math.max(0, words.length - Deno.args.length - 1));
    } catch {
      // No /proc, or no --allow-run to read it: keep the launcher's permissions.
    }
    narrowThreads = flags.includes("--unstable-worker-options");
    if (!narrowThreads)
      log.warn(
        "shard threads get the launcher's permissions: run deno with --unstable-worker-options to narrow them (deno task start does)",
      );
  }
  return narrowThreads;
}

function startWorker(spec: ShardSpec): Worker {
  const url = new URL("./deno-thread.ts", import.meta.url).href;
  const options = { type: "module" as const, name: `shard ${spec.index}` };
  if (!mayNarrowThreads()) return new Worker(url, options);
  const permissions = threadPermissions(spec);
  return new Worker(url, { ...options, deno: { permissions } } as WorkerOptions);
}

/**
 * Threads mode: a shard as a Deno Worker running runtimes/deno-thread.ts, with the handle the
 * supervisor drives (send, kill, message and exit events), as for a child process.
 */
class DenoThread extends EventEmitter {
  /** The launcher's pid: threads share it. */
  readonly pid = Deno.pid;
  readonly label = `thread ${++threads}`;
  connected = true;
  /** Unset where the Worker could not even be created (the handle then reports exit 1). */
  private readonly worker?: Worker;

  constructor(spec: ShardSpec) {
    super();
    try {
      this.worker = startWorker(spec);
    } catch (error) {
      // Say it as a child process would: a start that failed, not an exception in the launcher.
      queueMicrotask(() => {
        this.emit("error", error);
        this.exited(1, null);
      });
      return;
    }
    const worker = this.worker;
    worker.addEventListener("message", (event) => {
      const message = event.data as ThreadExit | { type?: string };
      if (message?.type === "thread-exit") return this.exited((message as ThreadExit).code, null);
      this.emit("message", message);
    });
    // An uncaught error ends the thread (Deno prints it); the launcher carries on.
    worker.addEventListener("error", (event) => {
      event.preventDefault();
      log.warn(`shard ${this.label}: uncaught ${event.message.replace(/^Uncaught /, "")}`);
      worker.terminate();
      this.exited(1, null);
    });
    worker.postMessage({ type: "spec", spec });
  }

  private exited(code: number | null, signal: NodeJS.Signals | null): void {
    if (!this.connected) return;
    this.connected = false;
    this.emit("exit", code, signal);
    // As a child process does, "close" follows "exit" later, once its listeners are in place.
    setTimeout(() => this.emit("close", code, signal), 0);
  }

  send(message: LauncherMessage): boolean {
    if (this.connected) this.worker?.postMessage(message);
    return this.connected;
  }

  /** SIGKILL terminates the thread at once; any other signal asks it to drain. */
  kill(signal: NodeJS.Signals = "SIGTERM"): boolean {
    if (signal !== "SIGKILL") return this.send({ type: "drain" });
    this.worker?.terminate();
    this.exited(null, "SIGKILL");
    return true;
  }
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
  listen: listenDeno,
  spawnThread: (spec) => new DenoThread(spec),
  memoryUsage: denoMemory,
  readProc,
};

const defaultApp = `${root}/src/app.ts`;

/** Starts shardport on Deno from your own entry file: `await start({ app: "./app.ts", shards: 4 })`. */
export const start = (options?: StartOptions): Promise<Launched> => startWith(deno, defaultApp, options);

// A shard thread runs this module too (threads mode).
// Not awaited: a pending top-level await would hold back later dynamic imports (Deno).
if (import.meta.main || isShardThread()) main(deno, defaultApp);
