/**
 * Deno: `Deno.serve({ reusePort: true })`, which needs `--unstable-net`. Shards get only the
 * permissions they need (never -A). Entry of `deno task start`.
 * @module
 */
import type { Launched, StartOptions } from "../src/launcher/cli.ts";
import { ThreadHandle, Turns } from "../src/launcher/thread-handle.ts";
import { log } from "../src/log.ts";
import { demoAppBeside, main } from "../src/main.ts";
import { type LauncherMessage, SHARD_ENV, type ShardSpec } from "../src/protocol.ts";
import type { Proc, Runtime, ShardAccess, ShardHandle } from "../src/types.ts";
import { canStopListeners, ownListeners, stopChildListener, stopOwnListener } from "./deno-listener.ts";
import { DenoShardProcess } from "./deno-process.ts";
import { denoMemory, listenDeno } from "./deno-serve.ts";
import type { ListenTurn, ThreadExit } from "./deno-thread.ts";

// No node: module and no `process` here, nor on the launcher's way to its first shards (src/main.ts,
// src/launcher/early.ts): either boots or loads Deno's Node layer (15 to 30 ms); `proc` below
// answers for them.

/** A file: URL's path, as node:url's fileURLToPath gives it on POSIX. */
const filePath = (url: string | URL) => decodeURIComponent(new URL(url).pathname);
/** The folder of an absolute path. */
const dirname = (path: string) => path.slice(0, path.lastIndexOf("/")) || "/";

// A path where this module is a file (the repository, the npm package); its URL where it is not
// (imported from JSR), which `deno run` and Worker take as well.
const local = import.meta.url.startsWith("file:");
const entry = local ? filePath(import.meta.url) : import.meta.url;
/** A shard process's entry: runtimes/deno-shard.ts, or dist/deno-shard.js beside a bundled entry. */
const shardUrl = new URL(`./deno-shard.${import.meta.url.endsWith(".js") ? "js" : "ts"}`, import.meta.url);
const shardEntry = local ? filePath(shardUrl) : shardUrl.href;
/** The package's root folder (shards may read it), where it is one. */
const root = local ? dirname(dirname(entry)) : undefined;

// Deno wants --allow-all for /proc and /sys files; the launcher, which may run processes, asks cat.
const readProc = (path: string) =>
  new TextDecoder().decode(new Deno.Command("cat", { args: [path] }).outputSync().stdout);

// The same for /proc/PID/fd links: one `find` over every process's fds (the port guard's holders).
const socketLinks = () => {
  const script = "find /proc/[0-9]*/fd -maxdepth 1 -lname 'socket:*' -printf '%h %l\\n' 2>/dev/null";
  const text = new TextDecoder().decode(new Deno.Command("sh", { args: ["-c", script] }).outputSync().stdout);
  return [...text.matchAll(/^\/proc\/(\d+)\/fd socket:\[(\d+)\]$/gm)].map((match) => ({
    pid: Number(match[1]),
    inode: Number(match[2]),
  }));
};

const address = ({ host, port }: ShardAccess) => `${host.includes(":") ? `[${host}]` : host}:${port}`;

/**
 * What a shard may do, process or thread: listen on host:port, read the project and the app's
 * folder, read the environment, read the host name (pino does at load). Not the TLS files: the
 * launcher hands a shard the PEM it checked (src/launcher/tls.ts).
 */
function shardPermissions(access: ShardAccess) {
  const read = root ? [root, dirname(access.app)] : [dirname(access.app)];
  return { net: [address(access)], read, env: true, sys: ["hostname"] };
}

/** Deno's short forms of the permission flags a shard process is given. */
const SHORT_FLAGS: Record<string, string> = { N: "net", R: "read", W: "write", E: "env", S: "sys" };

/** SHARDPORT_DENO_FLAGS's words. */
const userFlags = () => (Deno.env.get("SHARDPORT_DENO_FLAGS") ?? "").split(/\s+/).filter(Boolean);

/**
 * A word of SHARDPORT_DENO_FLAGS that is not a flag: Deno takes a flag's list only after `=`
 * (`--allow-read /srv` would make `/srv` the script to run, and every shard fail).
 */
function flagsProblem(): string | undefined {
  const word = userFlags().find((each) => !each.startsWith("-"));
  if (word === undefined) return undefined;
  return `SHARDPORT_DENO_FLAGS: '${word}' is not a flag; give a flag's list after '=', e.g. --allow-read=${word}`;
}

/** The kinds a flag grants in full (a bare --allow-net, -N, -NR), "all" for -A, else none. */
function widens(flag: string): string[] {
  if (flag === "--allow-all") return ["all"];
  const long = /^--allow-(\w+)$/.exec(flag);
  if (long) return [long[1]];
  const short = /^-([A-Za-z]+)$/.exec(flag);
  if (!short) return [];
  return [...short[1]].flatMap((letter) =>
    letter === "A" ? ["all"] : SHORT_FLAGS[letter] ? [SHORT_FLAGS[letter]] : [],
  );
}

/** The kind a flag grants a list of (--allow-net=..., -N=...), if any. */
const listKind = (flag: string) =>
  /^--allow-(\w+)=/.exec(flag)?.[1] ?? SHORT_FLAGS[/^-([NRWES])=/.exec(flag)?.[1] ?? ""];

/**
 * As a shard process's flags, plus what SHARDPORT_DENO_FLAGS adds. `channel`: the launcher's
 * socket (runtimes/deno-process.ts), which Deno asks net, read and write access for to connect.
 * Deno joins two lists of one kind (`--allow-write=a --allow-write=b`), but a list wins over that
 * kind's bare flag whatever their order, and `--allow-all` refuses any other. So a bare flag
 * (`--allow-net`, `-N`, `-NR`) given there replaces ours of its kind, `-A` all of ours; a list of
 * a kind we grant in full (`--allow-env=HOME`) is left out, since it would narrow ours (a shard
 * must read its spec from the environment).
 */
function permissions(access: ShardAccess, channel: string): string[] {
  const { net, read, sys } = shardPermissions(access);
  const extra = userFlags();
  const widened = new Set(extra.flatMap(widens));
  if (widened.has("all")) return extra;
  const ours: [string, string | undefined][] = [
    ["net", [...net, `unix:${channel}`].join(",")],
    ["read", [...read, channel].join(",")],
    ["write", channel],
    ["env", undefined],
    ["sys", sys.join(",")],
  ];
  const full = new Set(ours.filter(([, list]) => list === undefined).map(([kind]) => kind));
  return [
    ...ours
      .filter(([kind]) => !widened.has(kind))
      .map(([kind, list]) => (list === undefined ? `--allow-${kind}` : `--allow-${kind}=${list}`)),
    ...extra.filter((flag) => !full.has(listKind(flag))),
  ];
}

/**
 * As a shard thread's Worker options. Deno takes them only with --unstable-worker-options
 * (deno task start passes it); without it, and where SHARDPORT_DENO_FLAGS asks for more, a
 * thread has the launcher's permissions.
 */
function threadPermissions(access: ShardAccess) {
  if (Deno.env.get("SHARDPORT_DENO_FLAGS")) return "inherit";
  return { ...shardPermissions(access), run: false, write: false, ffi: false, import: "inherit" };
}

/**
 * A Deno.serve shard process whose drain first stops its listening socket (runtimes/
 * deno-listener.ts), so that Deno.serve's shutdown() resets nothing.
 */
function stopsListenerOnDrain(child: ShardHandle, spec: ShardSpec): ShardHandle {
  if (spec.http !== "native" || !canStopListeners()) return child;
  const send = child.send.bind(child);
  child.send = (message: LauncherMessage) => {
    if (message.type !== "drain" || child.pid === undefined) return send(message);
    return send({ type: "drain", listenerStopped: stopChildListener(child.pid, spec.port) });
  };
  return child;
}

let threads = 0;
/** Shard threads take turns to listen, so that each listener is known by its thread. */
const listenTurns = new Turns();
/** The listeners known to be a shard thread's (by socket cookie). */
const threadListeners = new Set<bigint>();
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
  // Bundled (dist/deno.js, the npm package), the thread's module is dist/deno-thread.js.
  const url = new URL(`./deno-thread.${import.meta.url.endsWith(".js") ? "js" : "ts"}`, import.meta.url).href;
  const options = { type: "module" as const, name: `shard ${spec.index}` };
  if (!mayNarrowThreads()) return new Worker(url, options);
  const permissions = threadPermissions(spec);
  return new Worker(url, { ...options, deno: { permissions } } as WorkerOptions);
}

/**
 * Threads mode: a shard as a Deno Worker running runtimes/deno-thread.ts, with the handle the
 * supervisor drives (send, kill, message and exit events), as for a child process.
 */
class DenoThread extends ThreadHandle {
  readonly pid = Deno.pid;
  readonly label = `thread ${++threads}`;
  /** Unset where the Worker could not even be created (the handle then reports exit 1). */
  private readonly worker?: Worker;
  /** Its listening socket's cookie, once known (Deno.serve, with FFI). */
  private listener?: bigint;
  /** Ends this thread's turn to listen. */
  private listened: () => void = () => {};

  constructor(private readonly spec: ShardSpec) {
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
      if (message?.type === "listen-turn") return this.takeTurn((message as ListenTurn).done);
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

  /** A turn to listen: the one listener of this port that is no other thread's is its own. */
  private takeTurn(done: boolean): void {
    if (done) {
      const mine = ownListeners(this.spec.port).filter((cookie) => !threadListeners.has(cookie));
      if (mine.length === 1) {
        this.listener = mine[0];
        threadListeners.add(mine[0]);
      }
      this.listened();
      return;
    }
    if (this.spec.http !== "native" || !canStopListeners()) {
      this.post({ type: "listen-go" });
      return;
    }
    this.listened = listenTurns.take(this, () => this.post({ type: "listen-go" }));
  }

  protected post(message: LauncherMessage | { type: "listen-go" }): void {
    if (message.type === "drain" && this.listener !== undefined) {
      const listenerStopped = stopOwnListener(this.spec.port, this.listener);
      threadListeners.delete(this.listener);
      this.listener = undefined;
      message = { type: "drain", listenerStopped };
    }
    this.worker?.postMessage(message);
  }

  protected override exited(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.listener !== undefined) threadListeners.delete(this.listener);
    super.exited(code, signal);
  }

  /** A Worker says nothing when terminated: the handle reports the end itself. */
  protected terminate(): void {
    this.worker?.terminate();
    this.exited(null, "SIGKILL");
  }
}

/** The process as Deno's own APIs tell it (see Runtime.proc). */
const proc: Proc = {
  args: () => Deno.args,
  env: () => Deno.env.toObject(),
  pid: () => Deno.pid,
  platform: () => Deno.build.os,
  cwd: () => Deno.cwd(),
  // The affinity mask, as availableParallelism() (sched_getaffinity) gives it.
  cpus: () => navigator.hardwareConcurrency,
  isFile: (path) =>
    Deno.stat(path).then(
      (info) => info.isFile,
      () => false,
    ),
  exists(path) {
    try {
      Deno.statSync(path);
      return true;
    } catch {
      return false;
    }
  },
  onSignal: (signal, listener) => Deno.addSignalListener(signal, listener),
  offSignal: (signal, listener) => Deno.removeSignalListener(signal, listener),
  exit: (code) => Deno.exit(code),
};

export const deno: Runtime = {
  name: "deno",
  proc,
  entry,
  version: Deno.version.deno,
  spawnShard: (env, access) =>
    stopsListenerOnDrain(
      new DenoShardProcess(Deno.execPath(), env, (channel) => [
        "run",
        "--unstable-net",
        "--no-prompt",
        ...permissions(access, channel),
        shardEntry,
      ]),
      JSON.parse(env[SHARD_ENV] ?? "{}"),
    ),
  listen: listenDeno,
  async canBind(hostname, port) {
    try {
      Deno.listen({ hostname, port }).close();
      return true;
    } catch {
      return false;
    }
  },
  spawnThread: (spec) => new DenoThread(spec),
  environmentProblem: flagsProblem,
  memoryUsage: denoMemory,
  readProc,
  socketLinks,
};

const defaultApp = local ? demoAppBeside(import.meta.url) : "";

/** Starts shardport on Deno from your own entry file: `await start({ app: "./app.ts", shards: 4 })`. */
export const start = async (options?: StartOptions): Promise<Launched> =>
  (await import("../src/launcher/cli.ts")).start(deno, defaultApp, options);

/** The command line: a shard or the launcher. The package's `shardport` bin calls it on Deno. */
export const cli = (): Promise<void> => main(deno, defaultApp);

// Only as the entry: a shard runs runtimes/deno-shard.ts (a process) or deno-thread.ts (a thread),
// never this module, so importing it (start()) touches no `process` (Deno's Node layer).
// Not awaited: a pending top-level await would hold back later dynamic imports (Deno).
if (import.meta.main) cli();
